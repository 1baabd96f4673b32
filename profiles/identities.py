"""Identity rows as integer codes: the one preparation shared by resolution and survivorship.

Millions of string keys are turned into integers once (records, identifiers), so the
linking and the golden-record rules work on numpy arrays. Resolution and survivorship
both start here, which guarantees they see the same rows, the same normalisation and
the same hub identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from profiles.config import ResolutionConfig
from profiles.normalize import normalize_id_type, normalize_identifiers
from sources.contract import IDENTITIES

#: sort key of a missing timestamp: after every real one ("not known to be early")
NEVER = np.iinfo(np.int64).max
#: sort key of a missing timestamp when the latest wins: before every real one
LONG_AGO = np.iinfo(np.int64).min


@dataclass(frozen=True)
class IdentityRows:
    """Usable identity rows, coded. Arrays named ``record_*`` / ``identifier_*`` are per
    record / per identifier; the others are per row.

    Records are numbered in (source_system, source_id) order, so a smaller record
    number is a smaller key: ties are broken by comparing integers.
    """

    record: np.ndarray              # per row: record number
    id_type: pd.Series              # per row: normalised id type, categorical (RangeIndex)
    value: pd.Series                # per row: normalised value, null when invalid
    identifier: np.ndarray          # per row: identifier number, -1 when the value is invalid
    seen_at: pd.Series | None       # per row, as given (None without a seen_at column)
    record_system: pd.Series        # per record: source_system
    record_id: pd.Series            # per record: source_id
    identifier_type: np.ndarray     # per identifier: its id type
    identifier_records: np.ndarray  # per identifier: how many distinct records carry it
    pair_record: np.ndarray         # per distinct (record, identifier) pair
    pair_identifier: np.ndarray
    rows_in: int
    rows_missing_key: int
    rows_outside_cutoff: int

    @property
    def n_records(self) -> int:
        return len(self.record_system)

    @property
    def n_identifiers(self) -> int:
        return len(self.identifier_type)

    def hub(self, config: ResolutionConfig) -> np.ndarray:
        """Per identifier: shared by too many records to be evidence of one person."""
        return self.identifier_records > config.max_records_per_identifier


def require_columns(df: pd.DataFrame, columns: list[str], table: str) -> None:
    """Fail where the data enters, naming the missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing required column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(c) for c in missing)} (found: {', '.join(map(str, df.columns))})")


def as_timestamps(values: pd.Series, column: str) -> pd.Series:
    """A timestamp column, parsed if it arrived as text; an unparseable value is an error."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    try:
        return pd.to_datetime(values)
    except (ValueError, TypeError):
        raise ValueError(f"column {column!r} is not a timestamp column") from None


def before(times: pd.Series, cutoff: datetime) -> np.ndarray:
    """``times < cutoff``; a missing time is not known to be before, so it is False.

    Naive timestamps are UTC (the source contract), so a naive cutoff compares with
    aware times as UTC and vice versa.
    """
    ts = pd.Timestamp(cutoff)
    tz = getattr(times.dtype, "tz", None)
    if tz is not None and ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    elif tz is None and ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return (times < ts).fillna(False).to_numpy(dtype=bool)


def sortable_ns(times: pd.Series, *, missing: int = NEVER) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) as int64, for lexsort, min and max.

    A missing time becomes ``missing``: NEVER (the default) when looking for the
    earliest, LONG_AGO when looking for the latest, so it loses either way.
    """
    if getattr(times.dtype, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    ns = times.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return np.where(times.isna().to_numpy(), missing, ns)


def _blank(distinct: pd.Index) -> np.ndarray:
    """Per distinct key value: empty or only whitespace."""
    s = pd.Series(distinct, dtype="str")
    return (s.str.strip().str.len() == 0).fillna(True).to_numpy(dtype=bool)


def _key_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Sorted codes of one key column, -1 for null or blank.

    Sorted codes make integer order the same as string order. Blankness is tested on
    the distinct values, not on every row. Keys are otherwise used exactly as given:
    they must still join to the other tables.
    """
    codes, distinct = pd.factorize(values if values.dtype == "str" else values.astype("str"), sort=True)
    distinct = pd.Index(distinct, dtype="str")
    blank = _blank(distinct)
    codes = codes.astype(np.int64)
    return np.where((codes >= 0) & ~blank[np.maximum(codes, 0)], codes, -1), distinct


def _code_records(sys_codes: np.ndarray, systems: pd.Index, id_codes: np.ndarray, ids: pd.Index
                  ) -> tuple[np.ndarray, pd.Series, pd.Series]:
    """Number records by their (source_system, source_id) key in sorted order.

    The combined integer of two sorted codes orders like the key tuple, so an integer
    factorisation with sort numbers the records in key order.
    """
    width = max(len(ids), 1)
    record, keys = pd.factorize(sys_codes * width + id_codes, sort=True)
    record_system = pd.Series(systems.take(keys // width), dtype="str")
    record_id = pd.Series(ids.take(keys % width), dtype="str")
    return record.astype(np.int64), record_system, record_id


def _id_types(id_types: pd.Series) -> pd.Series:
    """Normalised id type per row, as a categorical (RangeIndex).

    An id type column has a handful of spellings in millions of rows: each spelling
    is normalised once, and rows are compared as integer codes afterwards.
    """
    codes, spellings = pd.factorize(id_types)
    normalised = normalize_id_type(pd.Series(np.asarray(spellings, dtype=object), dtype="str"))
    type_codes, names = pd.factorize(normalised, sort=True)
    row_codes = np.where(codes >= 0, type_codes[np.maximum(codes, 0)] if len(type_codes) else -1, -1)
    return pd.Series(pd.Categorical.from_codes(row_codes, categories=pd.Index(names, dtype="str")))


def _code_identifiers(types: pd.Series, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Number identifiers (id type, normalised value); -1 for rows without a valid value."""
    type_codes, type_uniques = pd.factorize(types)
    value_codes, value_uniques = pd.factorize(values)
    n_values = max(len(value_uniques), 1)
    valid = (type_codes >= 0) & (value_codes >= 0)
    codes, uniques = pd.factorize(type_codes[valid].astype(np.int64) * n_values + value_codes[valid])
    identifier = np.full(len(values), -1, dtype=np.int64)
    identifier[valid] = codes
    identifier_type = np.asarray(type_uniques, dtype=object)[np.asarray(uniques, dtype=np.int64) // n_values]
    return identifier, identifier_type


def _distinct_pairs(record: np.ndarray, identifier: np.ndarray, n_identifiers: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (record, identifier) pairs: a value seen twice on one record counts once."""
    valid = identifier >= 0
    width = max(n_identifiers, 1)
    pairs = np.sort(record[valid] * width + identifier[valid])  # sort+diff: faster than np.unique here
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs
    return pairs // width, pairs % width


def prepare_identities(
    identities: pd.DataFrame, config: ResolutionConfig, cutoff: datetime | None = None
) -> IdentityRows:
    """Check, filter (cutoff, missing keys), normalise and code the identity rows.

    With ``cutoff`` only rows with ``seen_at < cutoff`` are used: an identifier seen
    later must not change history. Rows without ``seen_at`` are then left out too,
    since they are not known to be earlier. An empty result is an error, naming why.
    """
    require_columns(identities, IDENTITIES.required_columns, "identities")
    if cutoff is not None and "seen_at" not in identities.columns:
        raise ValueError("identities: a cutoff needs the 'seen_at' column to know when identifiers were seen")
    seen = as_timestamps(identities["seen_at"], "seen_at") if "seen_at" in identities.columns else None
    sys_codes, systems = _key_codes(identities["source_system"])
    id_codes, ids = _key_codes(identities["source_id"])
    has_key = (sys_codes >= 0) & (id_codes >= 0)
    in_window = before(seen, cutoff) if cutoff is not None and seen is not None else np.ones(len(has_key), bool)
    keep = has_key & in_window
    everything = bool(keep.all())

    def rows(col: pd.Series) -> pd.Series:
        col = col.reset_index(drop=True)
        return col if everything else col[keep].reset_index(drop=True)

    record, record_system, record_id = _code_records(sys_codes[keep], systems, id_codes[keep], ids)
    if len(record_system) == 0:
        raise ValueError(f"identities: no usable rows ({len(identities)} in, "
                         f"{int((~has_key).sum())} without a record key, "
                         f"{int((has_key & ~in_window).sum())} not seen before the cutoff)")
    id_type = rows(_id_types(identities["id_type"]))
    value = normalize_identifiers(id_type, rows(identities["value"]), default_country_code=config.default_country_code,
                                  strip_plus_tags_all_domains=config.strip_plus_tags_all_domains)
    identifier, identifier_type = _code_identifiers(id_type, value)
    pair_record, pair_identifier = _distinct_pairs(record, identifier, len(identifier_type))
    return IdentityRows(
        record=record, id_type=id_type, value=value, identifier=identifier,
        seen_at=None if seen is None else rows(seen),
        record_system=record_system, record_id=record_id,
        identifier_type=identifier_type,
        identifier_records=np.bincount(pair_identifier, minlength=len(identifier_type)),
        pair_record=pair_record, pair_identifier=pair_identifier,
        rows_in=len(identities), rows_missing_key=int((~has_key).sum()),
        rows_outside_cutoff=int((has_key & ~in_window).sum()),
    )
