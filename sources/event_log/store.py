"""The embedded event log: one SQLite file under CVM_HOME (``events/<dataset>/events.sqlite``).

``append`` writes a checked batch in one transaction, committed with ``synchronous=FULL``
in WAL mode before it returns: an acknowledged event survives a crash (SIGKILL, power) and
a batch is all or nothing. An ``event_id`` already in the log (or twice in the batch) is a
duplicate: skipped and counted, never applied twice, so a client may retry a batch whose
answer it lost. ``frame`` reads a window back in the log's columns (``EVENT_COLUMNS``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from base.atomic import durable_sqlite
from base.dates import to_us
from sources.event_log.records import EVENT_COLUMNS, Event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, identifier_type TEXT, identifier_value TEXT,
    event_type TEXT NOT NULL, occurred_us INTEGER NOT NULL, properties TEXT NOT NULL, received_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (occurred_us);
CREATE INDEX IF NOT EXISTS events_customer ON events (customer_id, occurred_us);
"""
#: ids per IN (...) query
_CHUNK = 500


#: a row as the log's readers tail it: (cursor, event_id, customer_id, event_type, occurred_us, properties JSON)
TailRow = tuple[int, str, str, str, int, str]


@dataclass(frozen=True)
class AppendCounts:
    received: int
    written: int
    duplicates: int


class EventLog:
    """The SQLite event log (thread-safe: one connection, one writer at a time)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = durable_sqlite(self.path, _SCHEMA)
        return self._con

    def append(self, events: Sequence[Event], customer_ids: Sequence[str], *, received_us: int) -> AppendCounts:
        """Write ``events`` (checked by ``records.check_batch``), each for the golden customer of
        ``customer_ids`` (resolved by the caller), in one durable transaction."""
        if len(events) != len(customer_ids):
            raise ValueError(f"{len(events)} events but {len(customer_ids)} customer ids")
        with self._lock:
            con = self._connect()
            con.execute("BEGIN IMMEDIATE")
            try:
                ids = [e.event_id for e in events]
                seen: set[str] = set()
                for i in range(0, len(ids), _CHUNK):
                    part = ids[i:i + _CHUNK]
                    rows = con.execute(f"SELECT event_id FROM events WHERE event_id IN ({', '.join('?' * len(part))})",
                                       part).fetchall()
                    seen.update(r[0] for r in rows)
                new = []
                for e, cid in zip(events, customer_ids, strict=True):
                    if e.event_id in seen:
                        continue
                    seen.add(e.event_id)
                    ident = e.identifier
                    new.append((e.event_id, cid, ident.type if ident else None, ident.value if ident else None,
                                e.type, to_us(e.timestamp), json.dumps(e.properties, separators=(",", ":")),
                                received_us))
                con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", new)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return AppendCounts(len(events), len(new), len(events) - len(new))

    def frame(self, start_us: int | None = None, end_us: int | None = None) -> pd.DataFrame:
        """Events with ``start_us <= occurred_us < end_us`` (all by default), oldest first."""
        where, args = [], []
        if start_us is not None:
            where.append("occurred_us >= ?")
            args.append(start_us)
        if end_us is not None:
            where.append("occurred_us < ?")
            args.append(end_us)
        sql = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._connect().execute(sql + " ORDER BY occurred_us, event_id", args).fetchall()
        return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))

    def tail(self, after: int, limit: int) -> list[TailRow]:
        """Events appended after cursor ``after`` (the SQLite rowid), in append order."""
        with self._lock:
            return self._connect().execute(
                "SELECT rowid, event_id, customer_id, event_type, occurred_us, properties FROM events "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, limit)).fetchall()

    def first_between(self, customer_id: str, event_type: str, start_us: int, end_us: int) -> tuple[str, int] | None:
        """The customer's earliest event of ``event_type`` with start_us <= time < end_us (event_id, time)."""
        with self._lock:
            row = self._connect().execute(
                "SELECT event_id, occurred_us FROM events WHERE customer_id = ? AND event_type = ? AND occurred_us >= ? "
                "AND occurred_us < ? ORDER BY occurred_us LIMIT 1", (customer_id, event_type, start_us, end_us)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def exists(self) -> bool:
        return self.path.exists()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
