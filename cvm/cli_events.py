"""``cvm events``: behavioural events into the dataset's event log, as POST /events takes them.

Thin commands over :mod:`profiles.events` (checks, identifier resolution, durable append).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cvm.common import HomeOpt, command, console, fail, group, home_of, run

events_app = group("Behavioural events: the event log POST /events writes and the nightly batch reads.")


def _read(file: Path) -> list[object]:
    """Events of a JSON Lines file (one event per line) or a JSON file ``{"events": [...]}`` / ``[...]``."""
    import json

    text = file.read_text()
    if file.suffix in (".jsonl", ".ndjson"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    fail(f"{file}:{n}: not valid JSON ({exc.msg}); nothing was written")
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno}); nothing was written")
    events = data.get("events") if isinstance(data, dict) else data
    if not isinstance(events, list):
        fail(f'{file}: expected {{"events": [...]}}, a JSON list, or JSON Lines (.jsonl)')
    return events


@command(events_app, "ingest")
def events_ingest(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines (.jsonl: one event per "
                                         "line) or JSON ({\"events\": [...]}).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose event log is written.")]
    = "completejourney",
    unknown: Annotated[str, typer.Option("--unknown", help="An identifier no profile holds: anonymous (a new "
                                         "anonymous profile) or reject (refuse its batch).")] = "anonymous",
    home: HomeOpt = None,
) -> None:
    """Record a file of events in the dataset's event log, checked as POST /events checks them, in batches of
    1,000: a bad event refuses its batch (the error names it and the field; earlier batches stay written and a
    rerun skips them as duplicates). Event ids already recorded are skipped and counted."""
    from datetime import UTC, datetime

    from profiles.events import ingest, latest_lookup
    from sources.dataset import dataset_name
    from sources.event_log.open import open_event_log
    from sources.event_log.records import MAX_EVENTS, EventError
    from sources.event_log.redis_log import EventLogUnavailable

    if unknown not in ("anonymous", "reject"):
        fail(f"--unknown must be anonymous or reject, got {unknown!r}")
    h = home_of(home)
    name = run(lambda: dataset_name(dataset))
    events = _read(file)
    if not events:
        fail(f"{file}: no events")
    h.events(name, ensure=True)
    log = open_event_log(h, name)
    lookup = latest_lookup(h.profiles(name))
    written = duplicates = 0
    try:
        for start in range(0, len(events), MAX_EVENTS):
            part = events[start:start + MAX_EVENTS]
            try:
                counts = ingest(part, log, lookup, now=datetime.now(UTC), unknown=unknown)  # type: ignore[arg-type]
            except EventError as exc:
                fail(f"{file}, batch of events {start:,}-{start + len(part) - 1:,}: {exc}. Written before it: "
                     f"{written:,} (rerun after fixing: they are skipped as duplicates)")
            except EventLogUnavailable as exc:
                fail(f"{exc}. Written before it: {written:,} (rerun: they are skipped as duplicates)")
            written, duplicates = written + counts.written, duplicates + counts.duplicates
    finally:
        log.close()
    console.print(f"{file}: {len(events):,} events, {written:,} written, {duplicates:,} duplicates skipped",
                  soft_wrap=True)
