"""The decision log's two backends behind one interface.

* ``SQLiteDecisionStore`` (the embedded default): one file under CVM_HOME, WAL mode,
  ``synchronous=FULL`` (a decision is on disk before its answer is sent), one connection
  per thread. Several worker processes share it: ``decide`` runs in a
  ``BEGIN IMMEDIATE`` transaction, which takes the database's write lock, so the
  read-count-insert of one decision never interleaves with another worker's.
* ``PostgresDecisionStore`` (at scale, ``CVM_DECISIONS_URL=postgresql://...``): the same
  tables; ``decide`` takes a transaction-scoped advisory lock on the customer, so
  decisions for different customers run in parallel and those for one customer queue.

``decide(customer_id, since_us, choose)`` is the whole contact-policy transaction: it
reads the customer's live contacts and outcomes since ``since_us``, calls ``choose`` with
them (the offer engine, pure), and inserts what ``choose`` returns, all under the lock;
50 concurrent calls for a customer one contact short of a cap give one offer.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from base.home import Home
from scoring.decisions.records import (
    DECISION_COLUMNS,
    OUTCOME_COLUMNS,
    Decision,
    DecisionStoreUnavailable,
    LiveHistory,
    Outcome,
    OutcomeCounts,
    OutcomeError,
    to_us,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS decisions (
        decision_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, decided_us BIGINT NOT NULL,
        arm TEXT NOT NULL, offer_id TEXT, channel TEXT, pscore DOUBLE PRECISION NOT NULL,
        policy_offer_id TEXT, offers TEXT NOT NULL, model_versions TEXT NOT NULL,
        catalog_version TEXT NOT NULL, snapshot_version TEXT NOT NULL, source TEXT NOT NULL,
        released INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS ix_decisions_customer ON decisions (customer_id, decided_us)",
    "CREATE INDEX IF NOT EXISTS ix_decisions_time ON decisions (decided_us)",
    """CREATE TABLE IF NOT EXISTS outcomes (
        outcome_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, customer_id TEXT NOT NULL,
        offer_id TEXT, type TEXT NOT NULL, occurred_us BIGINT NOT NULL, value DOUBLE PRECISION,
        received_us BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS ix_outcomes_customer ON outcomes (customer_id, occurred_us)",
    "CREATE INDEX IF NOT EXISTS ix_outcomes_decision ON outcomes (decision_id)",
)
_INSERT_DECISION = (f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
                    f"VALUES ({', '.join(['?'] * len(DECISION_COLUMNS))})")
_UPSERT_DECISION = _INSERT_DECISION + " ON CONFLICT (decision_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in DECISION_COLUMNS if c != "decision_id")
_INSERT_OUTCOME = (f"INSERT INTO outcomes ({', '.join(OUTCOME_COLUMNS)}) "
                   f"VALUES ({', '.join(['?'] * len(OUTCOME_COLUMNS))}) ON CONFLICT (outcome_id) DO NOTHING")
_LIVE_CONTACTS = ("SELECT offer_id, decided_us FROM decisions WHERE customer_id = ? AND decided_us >= ? "
                  "AND offer_id IS NOT NULL AND released = 0")
_LIVE_OUTCOMES = ("SELECT offer_id, type, occurred_us FROM outcomes WHERE customer_id = ? AND occurred_us >= ? "
                  "AND offer_id IS NOT NULL")
#: ids looked up per query when checking a batch of outcomes
_CHUNK = 500
#: PostgreSQL: a bulk append of at least this many decisions refreshes the planner's statistics
_ANALYZE_AFTER = 100_000


class _Store:
    """SQL shared by both backends (written with ``?``; PostgreSQL converts)."""

    paramstyle = "?"

    def _q(self, sql: str) -> str:
        return sql if self.paramstyle == "?" else sql.replace("?", "%s")

    # the backends provide a connection context: (cursor, commit-on-exit, lock for decide)
    def _transaction(self): ...  # pragma: no cover - abstract

    def decide(self, customer_id: str, since_us: int, choose: Callable[[LiveHistory], Decision | None]
               ) -> Decision | None:
        """One decision in its own transaction (a group of one)."""
        result = self.decide_group([(customer_id, since_us, choose)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def decide_group(self, items: Sequence[tuple[str, int, Callable[[LiveHistory], Decision | None]]]
                     ) -> list[Decision | None | Exception]:
        """Several ``decide`` calls in one transaction, so they share one commit (one fsync):
        each sees the live history the earlier ones of the group wrote. A ``choose`` that
        raises fails only its own item (it raised before its insert: nothing of it is
        written), and the exception is its result; a store error fails the whole group with
        ``DecisionStoreUnavailable`` (nothing of it is durable)."""
        results: list[Decision | None | Exception] = []
        with self._transaction_for([c for c, _, _ in items]) as cur:
            for customer_id, since_us, choose in items:
                cur.execute(self._q(_LIVE_CONTACTS), (customer_id, since_us))
                contacts = [(r[0], int(r[1])) for r in cur.fetchall()]
                cur.execute(self._q(_LIVE_OUTCOMES), (customer_id, since_us))
                outcomes = [(r[0], r[1], int(r[2])) for r in cur.fetchall()]
                try:
                    decision = choose(LiveHistory(contacts, outcomes))
                except Exception as exc:  # noqa: BLE001 - the caller's error, handed back to that caller
                    results.append(exc)
                    continue
                if decision is not None:
                    cur.execute(self._q(_INSERT_DECISION), decision.row())
                results.append(decision)
        return results

    def _transaction_for(self, customer_ids: Sequence[str]):
        """The transaction of a group (SQLite's write lock covers every customer)."""
        return self._transaction()

    def log(self, decisions: Sequence[Decision]) -> None:
        """Append decisions made elsewhere, in one transaction."""
        self._append([d.row() for d in decisions])

    def log_table(self, table: pd.DataFrame) -> None:
        """Write a table of decisions (``DECISION_COLUMNS``; the nightly batch's) in one
        transaction. A decision id already logged is replaced: a rerun of the same batch
        (same dataset and date, so the same ids) leaves one decision per customer."""
        cols = [table[c].astype(object).where(table[c].notna(), None).tolist() for c in DECISION_COLUMNS]
        self._append(list(zip(*cols, strict=True)), replace=True)

    def _append(self, rows: list[tuple], replace: bool = False) -> None:
        if not rows:
            return
        with self._transaction() as cur:
            cur.executemany(self._q(_UPSERT_DECISION if replace else _INSERT_DECISION), rows)

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> OutcomeCounts:
        """Write a batch of outcomes atomically: every decision id must exist (else
        ``OutcomeError`` naming the unknown ones, nothing written); an ``outcome_id``
        already recorded (now or in this batch) is skipped and counted as a duplicate."""
        if not outcomes:
            return OutcomeCounts(0, 0, 0)
        received_us = to_us_now()
        with self._transaction() as cur:
            wanted = sorted({o.decision_id for o in outcomes})
            known: dict[str, tuple[str, str | None]] = {}
            for i in range(0, len(wanted), _CHUNK):
                part = wanted[i:i + _CHUNK]
                cur.execute(self._q(f"SELECT decision_id, customer_id, offer_id FROM decisions "
                                    f"WHERE decision_id IN ({', '.join(['?'] * len(part))})"), part)
                known.update({r[0]: (r[1], r[2]) for r in cur.fetchall()})
            unknown = [d for d in wanted if d not in known]
            if unknown:
                shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                raise OutcomeError(f"decision_id: unknown decision(s) {shown}; nothing of this batch was written")
            ids = [o.outcome_id for o in outcomes]
            existing: set[str] = set()
            for i in range(0, len(ids), _CHUNK):
                part = ids[i:i + _CHUNK]
                cur.execute(self._q(f"SELECT outcome_id FROM outcomes WHERE outcome_id IN "
                                    f"({', '.join(['?'] * len(part))})"), part)
                existing.update(r[0] for r in cur.fetchall())
            rows, seen, released = [], set(existing), set()
            for o in outcomes:
                if o.outcome_id in seen:
                    continue
                seen.add(o.outcome_id)
                customer, offer = known[o.decision_id]
                rows.append((o.outcome_id, o.decision_id, customer, offer, o.type, to_us(o.timestamp), o.value,
                             received_us))
                if o.type == "not_shown":
                    released.add(o.decision_id)
            if rows:
                cur.executemany(self._q(_INSERT_OUTCOME), rows)
            for d in sorted(released):
                cur.execute(self._q("UPDATE decisions SET released = 1 WHERE decision_id = ?"), (d,))
        return OutcomeCounts(len(outcomes), len(rows), len(outcomes) - len(rows), len(released))

    def live(self, since_us: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Every customer's live contacts and outcomes since ``since_us`` (for the batch):
        frames (customer_id, offer_id, decided_us) and (customer_id, offer_id, type, occurred_us)."""
        with self._transaction() as cur:
            cur.execute(self._q("SELECT customer_id, offer_id, decided_us FROM decisions WHERE decided_us >= ? "
                                "AND offer_id IS NOT NULL AND released = 0"), (since_us,))
            contacts = pd.DataFrame(cur.fetchall(), columns=["customer_id", "offer_id", "decided_us"])
            cur.execute(self._q("SELECT customer_id, offer_id, type, occurred_us FROM outcomes "
                                "WHERE occurred_us >= ? AND offer_id IS NOT NULL"), (since_us,))
            outcomes = pd.DataFrame(cur.fetchall(), columns=["customer_id", "offer_id", "type", "occurred_us"])
        return contacts, outcomes

    def decisions(self, start_us: int | None = None, end_us: int | None = None) -> pd.DataFrame:
        """Decisions with ``start_us <= decided_us < end_us`` (the whole log by default)."""
        where, args = _range("decided_us", start_us, end_us)
        with self._transaction() as cur:
            cur.execute(self._q(f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions{where}"), args)
            frame = pd.DataFrame(cur.fetchall(), columns=list(DECISION_COLUMNS))
        frame["released"] = frame["released"].astype(bool)
        return frame

    def outcomes(self, start_us: int | None = None, end_us: int | None = None) -> pd.DataFrame:
        """Outcomes of decisions made in ``[start_us, end_us)``."""
        where, args = _range("d.decided_us", start_us, end_us)
        cols = ", ".join(f"o.{c}" for c in OUTCOME_COLUMNS)
        with self._transaction() as cur:
            cur.execute(self._q(f"SELECT {cols} FROM outcomes o JOIN decisions d ON d.decision_id = o.decision_id"
                                f"{where}"), args)
            return pd.DataFrame(cur.fetchall(), columns=list(OUTCOME_COLUMNS))

    def count(self) -> int:
        with self._transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM decisions")
            return int(cur.fetchone()[0])

    def ping(self) -> None:
        """Raise ``DecisionStoreUnavailable`` unless the log answers."""
        with self._transaction() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()


def _range(column: str, start: int | None, end: int | None) -> tuple[str, tuple]:
    parts, args = [], []
    if start is not None:
        parts.append(f"{column} >= ?")
        args.append(start)
    if end is not None:
        parts.append(f"{column} < ?")
        args.append(end)
    return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(args)


def to_us_now() -> int:
    return time.time_ns() // 1000


class _SQLiteTransaction:
    def __init__(self, store: SQLiteDecisionStore, immediate: bool):
        self.store, self.immediate = store, immediate

    def __enter__(self):
        try:
            self.con = self.store._connection()
            self.con.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        except sqlite3.Error as exc:
            raise DecisionStoreUnavailable(f"decision log {self.store.path}: {exc}") from exc
        return self.con.cursor()

    def __exit__(self, kind, exc, tb):
        try:
            if kind is None:
                self.con.execute("COMMIT")
            else:
                self.con.execute("ROLLBACK")
        except sqlite3.Error as err:
            if kind is None:
                raise DecisionStoreUnavailable(f"decision log {self.store.path}: commit failed: {err}") from err
        if kind is not None and issubclass(kind, sqlite3.Error):
            raise DecisionStoreUnavailable(f"decision log {self.store.path}: {exc}") from exc
        return False


class SQLiteDecisionStore(_Store):
    """The embedded decision log: ``<CVM_HOME>/decisions/decisions.sqlite``."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5_000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                  timeout=self.busy_timeout_ms / 1000)
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if con.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("could not switch the decision log to WAL mode")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                con.execute(stmt)
            con.execute("COMMIT")
            self._local.con = con
            with self._guard:
                self._all.append(con)
        return con

    def _transaction(self):
        return _SQLiteTransaction(self, immediate=True)

    def close(self) -> None:
        with self._guard:
            for con in self._all:
                con.close()
            self._all.clear()
        self._local = threading.local()


class _PgTransaction:
    def __init__(self, store: PostgresDecisionStore, group: list[str] | None = None):
        self.store, self.group = store, group

    def __enter__(self):
        import psycopg

        try:
            self.con = self.store._connection()
            self.cur = self.con.cursor()
            if self.group:
                self.cur.execute("SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(c, 0) AS k "
                                 "FROM unnest(%s::text[]) AS c ORDER BY k) AS keys", (self.group,))
        except psycopg.Error as exc:
            self.store._drop()
            raise DecisionStoreUnavailable(f"decision log {self.store.safe_url}: {exc}") from exc
        return self.cur

    def __exit__(self, kind, exc, tb):
        import psycopg

        try:
            if kind is None:
                self.con.commit()
            else:
                self.con.rollback()
        except psycopg.Error as err:
            self.store._drop()
            if kind is None:
                raise DecisionStoreUnavailable(f"decision log {self.store.safe_url}: commit failed: {err}") from err
        if kind is not None and issubclass(kind, psycopg.Error):
            self.store._drop()
            raise DecisionStoreUnavailable(f"decision log {self.store.safe_url}: {exc}") from exc
        return False


class PostgresDecisionStore(_Store):
    """The decision log on PostgreSQL (``postgresql://user@host:port/db``)."""

    paramstyle = "%s"

    def __init__(self, url: str, *, connect_timeout: int = 2):
        self.url = url
        self.connect_timeout = connect_timeout
        self._local = threading.local()
        self._all: list = []
        self._guard = threading.Lock()
        self._schema_ready = False

    @property
    def safe_url(self) -> str:
        """The URL without a password (for messages and logs)."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url

    def _connection(self):
        import psycopg

        con = getattr(self._local, "con", None)
        if con is None or con.closed:
            con = psycopg.connect(self.url, connect_timeout=self.connect_timeout)
            if not self._schema_ready:
                with con.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(7231)")  # one worker creates the tables
                    for stmt in _SCHEMA:
                        cur.execute(stmt)
                con.commit()
                self._schema_ready = True
            self._local.con = con
            with self._guard:
                self._all.append(con)
        return con

    def _drop(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                con.close()
            self._local.con = None
            with self._guard:
                self._all = [c for c in self._all if c is not con]

    def _transaction(self):
        return _PgTransaction(self)

    def _transaction_for(self, customer_ids: Sequence[str]):
        """Every customer's advisory lock, taken in the order of their keys: two groups
        that share customers cannot deadlock."""
        return _PgTransaction(self, sorted(set(customer_ids)))

    def _append(self, rows: list[tuple], replace: bool = False) -> None:
        """Bulk append with COPY (the nightly batch writes millions); with ``replace``,
        through a temporary table and an upsert."""
        if not rows:
            return
        cols = ", ".join(DECISION_COLUMNS)
        with self._transaction() as cur:
            target = "decisions"
            if replace:
                cur.execute("CREATE TEMP TABLE incoming (LIKE decisions) ON COMMIT DROP")
                target = "incoming"
            with cur.copy(f"COPY {target} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            if replace:
                updates = ", ".join(f"{c} = excluded.{c}" for c in DECISION_COLUMNS if c != "decision_id")
                cur.execute(f"INSERT INTO decisions ({cols}) SELECT {cols} FROM incoming "
                            f"ON CONFLICT (decision_id) DO UPDATE SET {updates}")
        if len(rows) >= _ANALYZE_AFTER:  # fresh statistics, so cap lookups keep using the customer index
            with self._transaction() as cur:
                cur.execute("ANALYZE decisions")

    def close(self) -> None:
        with self._guard:
            for con in self._all:
                with contextlib.suppress(Exception):
                    con.close()
            self._all.clear()
        self._local = threading.local()


DecisionStore = SQLiteDecisionStore | PostgresDecisionStore


def open_decision_store(url: str | None, home: Home, dataset: str) -> DecisionStore:
    """``url`` (``postgresql://...``, ``sqlite:///path``) or the dataset's embedded log under
    CVM_HOME (``decisions/<dataset>/decisions.sqlite``). Opening connects to nothing yet."""
    if not url:
        return SQLiteDecisionStore(home.decisions(dataset) / "decisions.sqlite")
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDecisionStore(url)
    if url.startswith("sqlite:///"):
        return SQLiteDecisionStore(url[len("sqlite:///"):])
    raise ValueError(f"CVM_DECISIONS_URL {url!r}: expected postgresql://... or sqlite:///path")
