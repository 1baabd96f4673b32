"""The event log on Redis (``CVM_REDIS_URL``): the same interface as the SQLite ``EventLog``, shared
by every worker and machine that reaches the server.

Keys, under ``cvm:<dataset>:events:``::

    stream           a stream: one entry per event, id ``<seq>-1`` (``seq`` = the log's cursor)
    seq              the last sequence number given
    id:<event_id>    the idempotency key (an event id already there is a duplicate)
    c:<customer>:<type>   a sorted set: the seqs of one customer's events of a type, by event time

``append`` runs one Lua script, so a batch is applied whole (Redis runs a script alone) and a
replayed event id is skipped. Acknowledged means in Redis's memory: it is durable across a
Redis crash only when the server runs with ``appendonly yes`` and ``appendfsync always``
(``durability()`` says how this server is configured; the service logs it at start).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pandas as pd

from base.dates import to_us
from base.redis_client import redis_client
from sources.event_log.records import EVENT_COLUMNS, Event
from sources.event_log.store import AppendCounts, TailRow

log = logging.getLogger(__name__)

_APPEND = """
local prefix = ARGV[1]
local width = 8
local written = 0
for b = 2, #ARGV, width do
  local eid = ARGV[b]
  if redis.call('SET', prefix .. 'id:' .. eid, '1', 'NX') then
    local seq = redis.call('INCR', prefix .. 'seq')
    redis.call('XADD', prefix .. 'stream', seq .. '-1', 'event_id', eid, 'customer_id', ARGV[b + 1],
               'identifier_type', ARGV[b + 2], 'identifier_value', ARGV[b + 3], 'event_type', ARGV[b + 4],
               'occurred_us', ARGV[b + 5], 'properties', ARGV[b + 6], 'received_us', ARGV[b + 7])
    redis.call('ZADD', prefix .. 'c:' .. ARGV[b + 1] .. ':' .. ARGV[b + 4], ARGV[b + 5], seq)
    written = written + 1
  end
end
return written
"""


class EventLogUnavailable(RuntimeError):
    """The event log's server cannot be reached: nothing of the batch was acknowledged."""


class RedisEventLog:
    def __init__(self, url: str, dataset: str, *, client=None):
        import redis

        self.url = url
        self.prefix = f"cvm:{dataset}:events:"
        self._redis = client or redis_client(url)
        self._errors = (redis.RedisError, OSError)
        self._script = self._redis.register_script(_APPEND)

    def _down(self, exc: Exception) -> EventLogUnavailable:
        from urllib.parse import urlsplit

        where = urlsplit(self.url)
        return EventLogUnavailable(f"the event log on Redis ({where.hostname}:{where.port}{where.path}) cannot be "
                                   f"reached: {type(exc).__name__}: {exc}")

    def durability(self) -> str:
        """How an acknowledged event survives a Redis crash on this server."""
        try:
            conf = {**self._redis.config_get("appendonly"), **self._redis.config_get("appendfsync")}
        except self._errors as exc:
            return f"unknown ({exc})"
        if conf.get("appendonly") == "yes" and conf.get("appendfsync") == "always":
            return "appendonly yes, appendfsync always: every acknowledged event is on disk"
        return (f"appendonly {conf.get('appendonly')}, appendfsync {conf.get('appendfsync')}: acknowledged events "
                "can be lost if Redis crashes (set appendonly yes and appendfsync always)")

    def append(self, events: Sequence[Event], customer_ids: Sequence[str], *, received_us: int) -> AppendCounts:
        if len(events) != len(customer_ids):
            raise ValueError(f"{len(events)} events but {len(customer_ids)} customer ids")
        args: list[object] = [self.prefix]
        for e, cid in zip(events, customer_ids, strict=True):
            ident = e.identifier
            args += [e.event_id, cid, ident.type if ident else "", ident.value if ident else "", e.type,
                     to_us(e.timestamp), json.dumps(e.properties, separators=(",", ":")), received_us]
        try:
            written = int(self._script(keys=[], args=args))
        except self._errors as exc:
            raise self._down(exc) from exc
        return AppendCounts(len(events), written, len(events) - written)

    @staticmethod
    def _row(entry_id: bytes | str, fields: dict) -> tuple:
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in fields.items()}
        seq = int(str(entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
        return seq, f

    def tail(self, after: int, limit: int) -> list[TailRow]:
        """Events appended after cursor ``after``: (cursor, event_id, customer_id, type, occurred_us, properties)."""
        try:
            entries = self._redis.xrange(self.prefix + "stream", min=f"{after + 1}-0", max="+", count=limit)
        except self._errors as exc:
            raise self._down(exc) from exc
        out = []
        for entry_id, fields in entries:
            seq, f = self._row(entry_id, fields)
            out.append((seq, f["event_id"], f["customer_id"], f["event_type"], int(f["occurred_us"]), f["properties"]))
        return out

    def first_between(self, customer_id: str, event_type: str, start_us: int, end_us: int) -> tuple[str, int] | None:
        """The customer's earliest event of ``event_type`` with start_us <= time < end_us (event_id, time)."""
        try:
            hits = self._redis.zrangebyscore(f"{self.prefix}c:{customer_id}:{event_type}", start_us, f"({end_us}",
                                             start=0, num=1, withscores=True)
            if not hits:
                return None
            seq, when = int(hits[0][0]), int(hits[0][1])
            entry = self._redis.xrange(self.prefix + "stream", min=f"{seq}-1", max=f"{seq}-1", count=1)
        except self._errors as exc:
            raise self._down(exc) from exc
        return (self._row(*entry[0])[1]["event_id"], when) if entry else None

    def frame(self, start_us: int | None = None, end_us: int | None = None) -> pd.DataFrame:
        rows, after = [], 0
        while True:
            try:
                entries = self._redis.xrange(self.prefix + "stream", min=f"{after + 1}-0", max="+", count=50_000)
            except self._errors as exc:
                raise self._down(exc) from exc
            for entry_id, fields in entries:
                after, f = self._row(entry_id, fields)
                us = int(f["occurred_us"])
                if (start_us is None or us >= start_us) and (end_us is None or us < end_us):
                    rows.append([f["event_id"], f["customer_id"], f["identifier_type"] or None,
                                 f["identifier_value"] or None, f["event_type"], us, f["properties"],
                                 int(f["received_us"])])
            if len(entries) < 50_000:
                break
        frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
        return frame.sort_values(["occurred_us", "event_id"], kind="stable").reset_index(drop=True)

    def exists(self) -> bool:
        try:
            return bool(self._redis.exists(self.prefix + "stream"))
        except self._errors as exc:
            raise self._down(exc) from exc

    def close(self) -> None:
        try:
            self._redis.close()
        except self._errors:
            pass
