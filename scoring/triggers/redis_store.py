"""The trigger engine's state on Redis (``CVM_REDIS_URL``): the same interface and the same
transitions as the SQLite ``TriggerStore``, shared by every worker and machine that reaches
the server, and living with the Redis event log whose cursor it keeps (a Redis restarted
without persistence loses both together, so the cursor never points past the log).

Keys, under ``cvm:<dataset>:triggers:``::

    cursor          the last event-log sequence number read
    t:<trigger_id>  a hash: one timer (``store.TIMER_COLUMNS``; a NULL is an absent field)
    t:pending       a sorted set: pending timer ids by due time
    t:all           a sorted set: every timer id by creation time (for ``timers()``)
    o:<trigger_id>  a hash: one outbox row (``store.OUTBOX_COLUMNS``)
    o:due           a sorted set: pending outbox ids by next attempt
    o:all           a sorted set: every outbox id by creation time
    x:<trigger>     a hash: customer id -> 1 or 0, the side of a score or segment crossing
    lease           a hash: owner, expires_us

Every transition is one Lua script, so it is applied whole and alone, as a SQLite
transaction is: a timer already known is not started again, a timer fires or is cancelled
once, and a fired timer and its outbox row are written together. Durable across a Redis
crash when the server runs with ``appendonly yes`` and ``appendfsync always``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from base.redis_client import redis_client
from scoring.triggers.store import OUTBOX_COLUMNS, TIMER_COLUMNS, Delivery, Timer

_INT_COLUMNS = {"cause_us", "due_us", "created_us", "done_us", "attempts", "next_attempt_us", "delivered_us"}

_TAKE_LEASE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
local expires = redis.call('HGET', KEYS[1], 'expires_us')
if owner and owner ~= ARGV[1] and tonumber(expires) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_us', ARGV[3])
return 1
"""

_RELEASE_LEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# ARGV: prefix, now_us, last_rowid, n_timers, then 7 fields per timer, then 3 per crossing
_SCHEDULE = """
local p = ARGV[1]
local now = ARGV[2]
local n = tonumber(ARGV[4])
local new = 0
local b = 5
for i = 1, n do
  local id = ARGV[b]
  local key = p .. 't:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'trigger_id', id, 'trigger', ARGV[b + 1], 'customer_id', ARGV[b + 2],
               'cause_us', ARGV[b + 5], 'due_us', ARGV[b + 6], 'state', 'pending', 'created_us', now)
    if ARGV[b + 3] ~= '' then redis.call('HSET', key, 'cause_event_id', ARGV[b + 3]) end
    if ARGV[b + 4] ~= '' then redis.call('HSET', key, 'cause_type', ARGV[b + 4]) end
    redis.call('ZADD', p .. 't:pending', ARGV[b + 6], id)
    redis.call('ZADD', p .. 't:all', now, id)
    new = new + 1
  end
  b = b + 7
end
while b <= #ARGV do
  redis.call('HSET', p .. 'x:' .. ARGV[b], ARGV[b + 1], ARGV[b + 2])
  b = b + 3
end
redis.call('SET', p .. 'cursor', ARGV[3])
return new
"""

# KEYS: timer hash, pending set; ARGV: id, state, reason, now_us
_CLOSE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'reason', ARGV[3], 'done_us', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: timer hash, pending set, outbox hash, outbox due set, outbox all set
# ARGV: id, trigger, customer, decision_id, payload, status, now_us
_FIRE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'fired', 'reason', ARGV[6], 'done_us', ARGV[7])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[3], 'trigger_id', ARGV[1], 'trigger', ARGV[2], 'customer_id', ARGV[3], 'payload', ARGV[5],
             'status', ARGV[6], 'attempts', '0', 'next_attempt_us', ARGV[7], 'created_us', ARGV[7])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], 'decision_id', ARGV[4]) end
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1])
  if ARGV[6] == 'pending' then redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1]) end
end
return 1
"""

# KEYS: outbox hash, outbox due set; ARGV: id, now_us
_DELIVERED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'delivered', 'delivered_us', ARGV[2])
redis.call('HDEL', KEYS[1], 'last_error')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: outbox hash, outbox due set; ARGV: id, error, next_attempt_us ('' = give up)
_ATTEMPT_FAILED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[2])
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'status', 'failed')
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'next_attempt_us', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""


def _text(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


class RedisTriggerStore:
    """``TriggerStore`` on a Redis server; safe to share between threads (the client pools)."""

    def __init__(self, url: str, dataset: str, *, client=None):

        self.url = url
        self.prefix = f"cvm:{dataset}:triggers:"
        self._redis = client or redis_client(url)
        scripts = {"take": _TAKE_LEASE, "release": _RELEASE_LEASE, "schedule": _SCHEDULE, "close": _CLOSE,
                   "fire": _FIRE, "delivered": _DELIVERED, "failed": _ATTEMPT_FAILED}
        self._scripts = {k: self._redis.register_script(v) for k, v in scripts.items()}

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    def _rows(self, ids: Sequence[bytes | str], kind: str, columns: Sequence[str]) -> list[dict]:
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(self._k(kind, ":", _text(i) or ""), list(columns))
        out = []
        for values in pipe.execute():
            row = {c: _text(v) for c, v in zip(columns, values, strict=True)}
            if row[columns[0]] is None:  # gone between the index and the row
                continue
            out.append({c: (int(v) if v is not None and c in _INT_COLUMNS else v) for c, v in row.items()})
        return out

    # ------------------------------------------------------------------ lease
    def take_lease(self, owner: str, now_us: int, ttl_us: int) -> bool:
        return bool(self._scripts["take"](keys=[self._k("lease")], args=[owner, now_us, now_us + ttl_us]))

    def release_lease(self, owner: str) -> None:
        self._scripts["release"](keys=[self._k("lease")], args=[owner])

    # ----------------------------------------------------------------- timers
    def cursor(self) -> int:
        value = self._redis.get(self._k("cursor"))
        return int(value) if value is not None else 0

    def schedule(self, timers: Sequence[Timer], last_rowid: int, now_us: int,
                 crossings: Sequence[tuple[str, str, bool]] = ()) -> int:
        args: list[object] = [self.prefix, now_us, last_rowid, len(timers)]
        for t in timers:
            args += [t.trigger_id, t.trigger, t.customer_id, t.cause_event_id or "", t.cause_type or "", t.cause_us,
                     t.due_us]
        for trigger, customer, inside in crossings:
            args += [trigger, customer, int(inside)]
        return int(self._scripts["schedule"](keys=[], args=args))

    def inside(self, trigger: str, customer_ids: Sequence[str]) -> dict[str, bool]:
        if not customer_ids:
            return {}
        values = self._redis.hmget(self._k("x:", trigger), list(customer_ids))
        return {c: _text(v) == "1" for c, v in zip(customer_ids, values, strict=True) if v is not None}

    def due(self, now_us: int, limit: int = 200) -> list[Timer]:
        ids = self._redis.zrangebyscore(self._k("t:pending"), "-inf", now_us, start=0, num=limit)
        fields = ("trigger_id", "trigger", "customer_id", "cause_event_id", "cause_type", "cause_us", "due_us")
        return [Timer(**r) for r in self._rows(ids, "t", fields)]

    def next_due_us(self) -> int | None:
        first = self._redis.zrange(self._k("t:pending"), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def close_timer(self, trigger_id: str, state: str, reason: str, now_us: int) -> None:
        self._scripts["close"](keys=[self._k("t:", trigger_id), self._k("t:pending")],
                               args=[trigger_id, state, reason, now_us])

    def fire(self, timer: Timer, decision_id: str | None, payload: dict, status: str, now_us: int) -> bool:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        keys = [self._k("t:", timer.trigger_id), self._k("t:pending"), self._k("o:", timer.trigger_id),
                self._k("o:due"), self._k("o:all")]
        args = [timer.trigger_id, timer.trigger, timer.customer_id, decision_id or "", body, status, now_us]
        return bool(self._scripts["fire"](keys=keys, args=args))

    # --------------------------------------------------------------- delivery
    def deliveries(self, now_us: int, limit: int = 50) -> list[Delivery]:
        ids = self._redis.zrangebyscore(self._k("o:due"), "-inf", now_us, start=0, num=limit)
        return [Delivery(**r) for r in self._rows(ids, "o", ("trigger_id", "trigger", "customer_id", "payload",
                                                              "attempts"))]

    def delivered(self, trigger_id: str, now_us: int) -> None:
        self._scripts["delivered"](keys=[self._k("o:", trigger_id), self._k("o:due")], args=[trigger_id, now_us])

    def attempt_failed(self, trigger_id: str, error: str, next_attempt_us: int | None) -> None:
        self._scripts["failed"](keys=[self._k("o:", trigger_id), self._k("o:due")],
                                args=[trigger_id, error[:500], "" if next_attempt_us is None else next_attempt_us])

    # ------------------------------------------------------------------ views
    def timers(self) -> list[dict]:
        return self._rows(self._redis.zrange(self._k("t:all"), 0, -1), "t", TIMER_COLUMNS)

    def outbox(self) -> list[dict]:
        return self._rows(self._redis.zrange(self._k("o:all"), 0, -1), "o", OUTBOX_COLUMNS)

    def close(self) -> None:
        self._redis.close()
