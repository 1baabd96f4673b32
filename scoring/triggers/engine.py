"""The trigger engine: event log in, timers, decisions and webhook deliveries out.

``fire_step(now)``: read the event-log rows appended since the cursor and start a timer for
each trigger they satisfy (an event of the ``when`` type, or a score or segment crossing
found by ``probe``), due at the cause's event time plus the wait; then fire the due timers.
Firing first looks in the event log for the ``unless`` event in [cause, cause + wait) by
event time (so an out-of-order or late purchase that is in the log by the deadline still
cancels), then asks ``decide`` for a next-best-offer decision (logged in the decision log
under the contact policy and control groups by the caller) and puts it in the outbox with
the timer closed, in one transaction.

``deliver_step(now)``: POST each pending outbox row to the webhook; a failure is retried
with doubling waits up to ``max_backoff_seconds``, then given up after ``max_attempts``.
A crash between a POST and its bookkeeping sends that row again with the same
``Idempotency-Key``: delivery is at least once.

Time is passed in (``now_us``): the engine reads no clock, so tests drive it exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from base.dates import from_us
from scoring.triggers.rules import OnEvent, OnScore, OnSegmentEntry, Trigger, TriggerFile, check_secret
from scoring.triggers.store import Timer, TriggerStore
from scoring.triggers.webhook import headers_for, post

if TYPE_CHECKING:
    from scoring.triggers.redis_store import RedisTriggerStore

log = logging.getLogger(__name__)

#: event-log rows read per step
TAIL_ROWS = 5000


class RetryLater(RuntimeError):
    """``decide`` cannot decide now (the decision log or the models are unavailable): keep the timer."""


@dataclass(frozen=True)
class Probe:
    """What ``probe`` says of one customer: scores and real-time segments on the fresh vector, and
    (``before_*``) on the snapshot's, the side a customer starts from."""

    scores: Mapping[str, float] = field(default_factory=dict)
    segments: frozenset[str] = frozenset()
    before_scores: Mapping[str, float] = field(default_factory=dict)
    before_segments: frozenset[str] = frozenset()


Decide = Callable[[str, Trigger, int], dict]
ProbeFn = Callable[[Sequence[str]], Mapping[str, Probe]]


def _iso(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")


def _inside(trigger: Trigger, scores: Mapping[str, float], segments: frozenset[str]) -> bool:
    when = trigger.when
    if isinstance(when, OnSegmentEntry):
        return when.segment_entry in segments
    assert isinstance(when, OnScore)
    value = scores.get(when.score)
    if value is None or math.isnan(value):  # no score: on neither side
        return False
    return value >= when.above if when.above is not None else value < when.below  # type: ignore[operator]


class TriggerEngine:
    def __init__(self, config: TriggerFile, store: TriggerStore | RedisTriggerStore, event_log, decide: Decide, *,
                 probe: ProbeFn | None = None, secret: str | None = None, client: httpx.Client | None = None):
        self.config = config
        self.triggers = {t.name: t for t in config.triggers if t.enabled}
        self.store = store
        self.event_log = event_log  # sources.event_log: EventLog or RedisEventLog
        self.decide = decide
        self.probe = probe
        self.secret = secret if secret is not None else check_secret(config, os.environ)
        self._client = client

    # ---------------------------------------------------------------- reading
    def _tail(self, now_us: int) -> int:
        rows = self.event_log.tail(self.store.cursor(), TAIL_ROWS)
        if not rows:
            return 0
        timers: list[Timer] = []
        for _, event_id, cid, etype, us, props in rows:
            for t in self.triggers.values():
                w = t.when
                if isinstance(w, OnEvent) and w.event == etype and (
                        w.category is None or json.loads(props).get("category") == w.category):
                    timers.append(Timer(f"{t.name}:{event_id}", t.name, cid, event_id, etype, us, us + t.wait_us))
        crossing_rules = [t for t in self.triggers.values() if not isinstance(t.when, OnEvent)]
        crossings: list[tuple[str, str, bool]] = []
        if crossing_rules and self.probe is not None:
            last: dict[str, tuple[str, str, int]] = {}
            for _, event_id, cid, etype, us, _ in rows:
                if cid not in last or us >= last[cid][2]:
                    last[cid] = (event_id, etype, us)
            probes = self.probe(list(last))
            for t in crossing_rules:
                known = self.store.inside(t.name, list(probes))
                for cid, p in probes.items():
                    now_in = _inside(t, p.scores, p.segments)
                    was_in = known.get(cid, _inside(t, p.before_scores, p.before_segments))
                    if now_in and not was_in:
                        event_id, etype, us = last[cid]
                        timers.append(Timer(f"{t.name}:{cid}:{event_id}", t.name, cid, event_id, etype, us,
                                            us + t.wait_us))
                    if cid not in known or known[cid] != now_in:
                        crossings.append((t.name, cid, now_in))
        new = self.store.schedule(timers, rows[-1][0], now_us, crossings)
        return new

    def _cancelled_by(self, timer: Timer, trigger: Trigger) -> str | None:
        if trigger.unless is None:
            return None
        row = self.event_log.first_between(timer.customer_id, trigger.unless.event, timer.cause_us,
                                           timer.cause_us + trigger.wait_us)
        return None if row is None else f"{trigger.unless.event} {row[0]} at {_iso(row[1])}"

    # ----------------------------------------------------------------- firing
    def fire_step(self, now_us: int) -> dict[str, int]:
        """Start the timers of new events, then fire or cancel the due ones."""
        counts = {"scheduled": self._tail(now_us), "fired": 0, "cancelled": 0, "failed": 0, "waiting": 0}
        for timer in self.store.due(now_us):
            trigger = self.triggers.get(timer.trigger)
            if trigger is None:
                self.store.close_timer(timer.trigger_id, "cancelled", "the trigger is no longer configured", now_us)
                counts["cancelled"] += 1
                continue
            why = self._cancelled_by(timer, trigger)
            if why is not None:
                self.store.close_timer(timer.trigger_id, "cancelled", why, now_us)
                counts["cancelled"] += 1
                continue
            try:
                answer = self.decide(timer.customer_id, trigger, now_us)
            except RetryLater as exc:
                log.error("trigger %s: cannot decide yet, the timer waits: %s", timer.trigger, exc)
                counts["waiting"] += 1
                break  # the cause is shared by the rest: try again at the next step
            except Exception as exc:  # noqa: BLE001 - one bad decision must not stop the engine
                log.error("trigger %s: decision failed: %s: %s", timer.trigger, type(exc).__name__, exc)
                self.store.close_timer(timer.trigger_id, "failed", f"{type(exc).__name__}: {exc}"[:300], now_us)
                counts["failed"] += 1
                continue
            offers = answer.get("offers") or []
            status = ("kept" if self.config.webhook is None else "pending") if offers else "skipped"
            payload = {"trigger": trigger.name, "trigger_id": timer.trigger_id, "customer_id": timer.customer_id,
                       "cause": {"event_id": timer.cause_event_id, "type": timer.cause_type,
                                 "occurred_at": _iso(timer.cause_us)},
                       "due_at": _iso(timer.due_us), "fired_at": _iso(now_us), "decision": answer}
            if self.store.fire(timer, answer.get("decision_id"), payload, status, now_us):
                counts["fired"] += 1
        return counts

    # --------------------------------------------------------------- delivery
    def _backoff_us(self, attempts: int) -> int:
        hook = self.config.webhook
        assert hook is not None
        return int(min(hook.backoff_seconds * 2 ** max(attempts - 1, 0), hook.max_backoff_seconds) * 1e6)

    def deliver_step(self, now_us: int, *, now_s: float | None = None) -> dict[str, int]:
        """One attempt for each outbox row that is due."""
        hook = self.config.webhook
        counts = {"delivered": 0, "retrying": 0, "failed": 0}
        if hook is None:
            return counts
        if self._client is None:
            self._client = httpx.Client()
        for d in self.store.deliveries(now_us):
            body = d.payload.encode()
            error = post(self._client, hook.url, body, headers_for(self.secret or "", d.trigger_id, d.trigger, body,
                                                                   now=now_s), hook.timeout_seconds)
            if error is None:
                self.store.delivered(d.trigger_id, now_us)
                counts["delivered"] += 1
                continue
            attempts = d.attempts + 1
            if attempts >= hook.max_attempts:
                self.store.attempt_failed(d.trigger_id, error, None)
                log.error("trigger %s: delivery given up after %d attempts: %s", d.trigger, attempts, error)
                counts["failed"] += 1
            else:
                self.store.attempt_failed(d.trigger_id, error, now_us + self._backoff_us(attempts))
                counts["retrying"] += 1
        return counts

    def close(self) -> None:
        self.event_log.close()
        if self._client is not None:
            self._client.close()
            self._client = None
