"""The trigger engine's durable state: one SQLite file (``$CVM_HOME/triggers/<dataset>/triggers.sqlite``).

* ``cursor``: the last event-log row the engine has read. It moves in the same transaction
  as the timers those rows start, so a crash re-reads rows instead of losing them, and a
  timer is never started twice (its id is the trigger and the event that started it).
* ``timers``: pending until due, then ``fired``, ``cancelled`` (with the event that
  cancelled it) or ``failed`` (with why). They survive a restart: they are rows.
* ``outbox``: one row per fired trigger (same id: the idempotency key), with the decision
  it made and its delivery: ``pending`` (attempts, next attempt, last error),
  ``delivered``, ``skipped`` (no offer to send: control group, nothing eligible),
  ``kept`` (no webhook configured) or ``failed`` (gave up after the configured attempts).
* ``crossings``: per score or segment trigger and customer, whether the customer is on the
  firing side, so a crossing fires once.
* ``lease``: which process runs the engine (one at a time across service workers).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from base.atomic import durable_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 1), last_rowid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS timers (
    trigger_id TEXT PRIMARY KEY, trigger TEXT NOT NULL, customer_id TEXT NOT NULL, cause_event_id TEXT,
    cause_type TEXT, cause_us INTEGER NOT NULL, due_us INTEGER NOT NULL, state TEXT NOT NULL,
    reason TEXT, created_us INTEGER NOT NULL, done_us INTEGER
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (state, due_us);
CREATE TABLE IF NOT EXISTS outbox (
    trigger_id TEXT PRIMARY KEY, trigger TEXT NOT NULL, customer_id TEXT NOT NULL, decision_id TEXT,
    payload TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL, last_error TEXT, created_us INTEGER NOT NULL, delivered_us INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_us);
CREATE TABLE IF NOT EXISTS crossings (
    trigger TEXT NOT NULL, customer_id TEXT NOT NULL, inside INTEGER NOT NULL, PRIMARY KEY (trigger, customer_id)
);
CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, expires_us INTEGER NOT NULL);
"""
TIMER_COLUMNS = ("trigger_id", "trigger", "customer_id", "cause_event_id", "cause_type", "cause_us", "due_us",
                 "state", "reason", "created_us", "done_us")
OUTBOX_COLUMNS = ("trigger_id", "trigger", "customer_id", "decision_id", "payload", "status", "attempts",
                  "next_attempt_us", "last_error", "created_us", "delivered_us")


@dataclass(frozen=True)
class Timer:
    trigger_id: str
    trigger: str
    customer_id: str
    cause_event_id: str | None
    cause_type: str | None
    cause_us: int
    due_us: int


@dataclass(frozen=True)
class Delivery:
    trigger_id: str
    trigger: str
    customer_id: str
    payload: str
    attempts: int


class TriggerStore:
    """Thread-safe (one connection, one lock); every write is one durable transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = durable_sqlite(self.path, _SCHEMA)
        return self._con

    def _write(self, fn):
        with self._lock:
            con = self._connect()
            con.execute("BEGIN IMMEDIATE")
            try:
                out = fn(con)
                con.execute("COMMIT")
                return out
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._connect().execute(sql, tuple(args)).fetchall()

    # ------------------------------------------------------------------ lease
    def take_lease(self, owner: str, now_us: int, ttl_us: int) -> bool:
        """True when ``owner`` holds the lease until ``now_us + ttl_us`` (taken or renewed)."""
        def take(con: sqlite3.Connection) -> bool:
            row = con.execute("SELECT owner, expires_us FROM lease WHERE id = 1").fetchone()
            if row is not None and row[0] != owner and row[1] > now_us:
                return False
            con.execute("INSERT INTO lease VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, "
                        "expires_us = excluded.expires_us", (owner, now_us + ttl_us))
            return True

        return self._write(take)

    def release_lease(self, owner: str) -> None:
        self._write(lambda con: con.execute("DELETE FROM lease WHERE id = 1 AND owner = ?", (owner,)))

    # ----------------------------------------------------------------- timers
    def cursor(self) -> int:
        rows = self._read("SELECT last_rowid FROM cursor WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    def schedule(self, timers: Sequence[Timer], last_rowid: int, now_us: int,
                 crossings: Sequence[tuple[str, str, bool]] = ()) -> int:
        """Start ``timers`` (an id already known is skipped), record crossing states and move the
        cursor to ``last_rowid``, in one transaction; how many timers were new."""
        def run(con: sqlite3.Connection) -> int:
            before = con.total_changes
            con.executemany("INSERT OR IGNORE INTO timers VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', NULL, ?, NULL)",
                            [(t.trigger_id, t.trigger, t.customer_id, t.cause_event_id, t.cause_type, t.cause_us,
                              t.due_us, now_us) for t in timers])
            new = con.total_changes - before
            con.executemany("INSERT INTO crossings VALUES (?, ?, ?) ON CONFLICT (trigger, customer_id) "
                            "DO UPDATE SET inside = excluded.inside", [(t, c, int(i)) for t, c, i in crossings])
            con.execute("INSERT INTO cursor VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET last_rowid = excluded.last_rowid",
                        (last_rowid,))
            return new

        return self._write(run)

    def inside(self, trigger: str, customer_ids: Sequence[str]) -> dict[str, bool]:
        """The recorded crossing side of each customer that has one."""
        if not customer_ids:
            return {}
        rows = self._read("SELECT customer_id, inside FROM crossings WHERE trigger = ? AND customer_id IN "
                          "(SELECT value FROM json_each(?))", (trigger, json.dumps(list(customer_ids))))
        return {c: bool(i) for c, i in rows}

    def due(self, now_us: int, limit: int = 200) -> list[Timer]:
        rows = self._read("SELECT trigger_id, trigger, customer_id, cause_event_id, cause_type, cause_us, due_us "
                          "FROM timers WHERE state = 'pending' AND due_us <= ? ORDER BY due_us LIMIT ?",
                          (now_us, limit))
        return [Timer(*r) for r in rows]

    def next_due_us(self) -> int | None:
        rows = self._read("SELECT min(due_us) FROM timers WHERE state = 'pending'")
        return rows[0][0] if rows and rows[0][0] is not None else None

    def close_timer(self, trigger_id: str, state: str, reason: str, now_us: int) -> None:
        self._write(lambda con: con.execute(
            "UPDATE timers SET state = ?, reason = ?, done_us = ? WHERE trigger_id = ? AND state = 'pending'",
            (state, reason, now_us, trigger_id)))

    def fire(self, timer: Timer, decision_id: str | None, payload: dict, status: str, now_us: int) -> bool:
        """Mark the timer fired and put its decision in the outbox, together; False if it was not
        pending any more (another run fired or cancelled it)."""
        def run(con: sqlite3.Connection) -> bool:
            cur = con.execute("UPDATE timers SET state = 'fired', reason = ?, done_us = ? "
                              "WHERE trigger_id = ? AND state = 'pending'", (status, now_us, timer.trigger_id))
            if cur.rowcount == 0:
                return False
            con.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, NULL)",
                        (timer.trigger_id, timer.trigger, timer.customer_id, decision_id,
                         json.dumps(payload, separators=(",", ":"), sort_keys=True), status, now_us, now_us))
            return True

        return self._write(run)

    # --------------------------------------------------------------- delivery
    def deliveries(self, now_us: int, limit: int = 50) -> list[Delivery]:
        rows = self._read("SELECT trigger_id, trigger, customer_id, payload, attempts FROM outbox "
                          "WHERE status = 'pending' AND next_attempt_us <= ? ORDER BY next_attempt_us LIMIT ?",
                          (now_us, limit))
        return [Delivery(*r) for r in rows]

    def delivered(self, trigger_id: str, now_us: int) -> None:
        self._write(lambda con: con.execute(
            "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_us = ?, last_error = NULL "
            "WHERE trigger_id = ?", (now_us, trigger_id)))

    def attempt_failed(self, trigger_id: str, error: str, next_attempt_us: int | None) -> None:
        """Count the failed attempt; retry at ``next_attempt_us``, or give up when it is None."""
        self._write(lambda con: con.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_us = coalesce(?, next_attempt_us), "
            "status = CASE WHEN ? IS NULL THEN 'failed' ELSE status END WHERE trigger_id = ?",
            (error[:500], next_attempt_us, next_attempt_us, trigger_id)))

    # ------------------------------------------------------------------ views
    def timers(self) -> list[dict]:
        return [dict(zip(TIMER_COLUMNS, r, strict=True))
                for r in self._read(f"SELECT {', '.join(TIMER_COLUMNS)} FROM timers ORDER BY created_us, trigger_id")]

    def outbox(self) -> list[dict]:
        return [dict(zip(OUTBOX_COLUMNS, r, strict=True))
                for r in self._read(f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox ORDER BY created_us, trigger_id")]

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
