"""Point in time: the as-of cut-off and the ``as_of=YYYY-MM-DD`` partition names.

Everything computed "as of" a day reads only data strictly before 00:00 of that day;
``cutoff`` is that instant, written once. Snapshots, batch outputs and saved profiles
are directories named ``as_of=YYYY-MM-DD``; ``partition_dir`` and ``partition_date``
are the only places that spell the name.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

from base.errors import InputError

PARTITION_PREFIX = "as_of="


def cutoff(as_of: date) -> datetime:
    """00:00 of ``as_of`` (naive, UTC by the source contract): rows at or after it are the future."""
    return datetime.combine(as_of, time())


def parse_date(value: str, what: str = "--as-of") -> date:
    """A ``YYYY-MM-DD`` string as a date; ``InputError`` naming ``what`` otherwise."""
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} {value!r} is not a date (expected YYYY-MM-DD)") from None


def partition_name(as_of: date) -> str:
    return f"{PARTITION_PREFIX}{as_of.isoformat()}"


def partition_dir(root: Path, as_of: date) -> Path:
    """``root/as_of=YYYY-MM-DD``."""
    return root / partition_name(as_of)


def partition_date(path: Path | str) -> date | None:
    """The date of an ``as_of=YYYY-MM-DD`` directory name, None for any other name."""
    name = Path(path).name
    if not name.startswith(PARTITION_PREFIX):
        return None
    try:
        return date.fromisoformat(name[len(PARTITION_PREFIX):])
    except ValueError:
        return None


def partitions(root: Path) -> list[date]:
    """Dates of the ``as_of=`` directories under ``root``, oldest first."""
    if not root.exists():
        return []
    return sorted(d for d in (partition_date(p) for p in root.iterdir() if p.is_dir()) if d is not None)


def to_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware (or UTC-naive) datetime: how the decision and
    event logs store times (exact, compact, compared alike on SQLite and PostgreSQL)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """The aware UTC datetime of ``to_us``'s microseconds."""
    return datetime.fromtimestamp(us / 1e6, tz=UTC)
