"""Triggers: timers from the event log, cancelled in event time, fired into logged decisions,
delivered signed to a real HTTP receiver with retries; timers survive a restart."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from base.dates import to_us
from profiles.events import ingest
from profiles.identifier_index import IdentifierLookup
from scoring.triggers.engine import Probe, RetryLater, TriggerEngine
from scoring.triggers.redis_store import RedisTriggerStore
from scoring.triggers.rules import TriggerConfigError, parse_triggers
from scoring.triggers.store import TriggerStore
from scoring.triggers.webhook import verify
from sources.event_log.store import EventLog

SECRET = "test-secret-not-a-real-one"
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
MIN = 60_000_000


class Receiver:
    """A real HTTP server on loopback that records what it gets; ``down`` makes it answer 503."""

    def __init__(self):
        self.got: list[tuple[dict, bytes]] = []
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.got.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.server)])
def open_store(request, tmp_path):
    """``open_store(name)``: a trigger store, reopened on the same state for the same name;
    every scenario runs on the embedded SQLite store and on a real Redis server."""
    opened = []
    run = uuid.uuid4().hex[:8]

    def make(name: str):
        if request.param == "sqlite":
            store = TriggerStore(tmp_path / f"{name}.sqlite")
        else:
            store = RedisTriggerStore(request.getfixturevalue("redis_url"), f"test-{run}-{name}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _config(url: str | None, max_attempts: int = 50) -> dict:
    cfg = {"triggers": [{"name": "abandoned_cart", "when": {"event": "add_to_cart"},
                         "unless": {"event": "purchase", "within_minutes": 15}, "channel": "email"}]}
    if url:
        cfg["webhook"] = {"url": url, "backoff_seconds": 1, "max_backoff_seconds": 4,
                          "max_attempts": max_attempts}
    return cfg


def _post(log: EventLog, events: list[dict]) -> None:
    empty = IdentifierLookup(pd.DataFrame({"id_type": [], "value": [], "customer_id": []}))
    ingest(events, log, empty, now=datetime(2025, 3, 4, 12, 0, tzinfo=UTC))


def _ev(eid, cid, kind, minutes, **props):
    ts = pd.Timestamp(T0) + pd.Timedelta(minutes=minutes)
    return {"event_id": eid, "customer_id": cid, "type": kind, "timestamp": ts.isoformat(),
            **({"properties": props} if props else {})}


class Decider:
    def __init__(self):
        self.calls: list[tuple[str, str, int]] = []
        self.fail = False

    def __call__(self, cid, trigger, now_us):
        if self.fail:
            raise RetryLater("decision log down")
        self.calls.append((cid, trigger.name, now_us))
        return {"decision_id": f"d-{cid}", "customer_id": cid, "arm": "policy",
                "offers": [{"offer_id": "cart-reminder", "channel": trigger.channel}]}


def test_rules_are_checked_naming_the_trigger_and_field():
    with pytest.raises(TriggerConfigError, match=r"trigger 'late': unless.within_minutes: .*greater than 0"):
        parse_triggers({"triggers": [{"name": "late", "when": {"event": "add_to_cart"},
                                      "unless": {"event": "purchase", "within_minutes": 0}}]})
    with pytest.raises(TriggerConfigError, match=r"trigger 'x': when.*above or below"):
        parse_triggers({"triggers": [{"name": "x", "when": {"score": "churn_probability"}}]})
    with pytest.raises(TriggerConfigError, match="unique: a"):
        parse_triggers({"triggers": [{"name": "a", "when": {"event": "view"}}] * 2})
    with pytest.raises(TriggerConfigError, match=r"trigger 'y': colour: Extra inputs"):
        parse_triggers({"triggers": [{"name": "y", "when": {"event": "view"}, "colour": "red"}]})


def test_abandoned_cart_fires_once_and_a_purchase_cancels_it_in_event_time(tmp_path, open_store, receiver, monkeypatch):
    log = EventLog(tmp_path / "events.sqlite")
    store = open_store("triggers")
    decide = Decider()
    engine = TriggerEngine(parse_triggers(_config(receiver.url)), store, log, decide, secret=SECRET)
    _post(log, [_ev("a1", "A", "add_to_cart", 0), _ev("b1", "B", "add_to_cart", 0),
                _ev("b2", "B", "purchase", 5, order_id="o1", amount=3.0),
                # C's purchase arrives before the cart it follows: event time decides
                _ev("c2", "C", "purchase", 3, order_id="o2", amount=4.0), _ev("c1", "C", "add_to_cart", 0),
                # D buys 15 min after: outside [cart, cart + 15 min), so it does not cancel
                _ev("d1", "D", "add_to_cart", 0), _ev("d2", "D", "purchase", 15, order_id="o3", amount=1.0)])
    t0 = to_us(T0)
    assert engine.fire_step(t0 + MIN)["scheduled"] == 4
    assert engine.fire_step(t0 + 15 * MIN - 1)["fired"] == 0 and not decide.calls  # not due yet
    counts = engine.fire_step(t0 + 15 * MIN)
    assert (counts["fired"], counts["cancelled"]) == (2, 2)
    assert sorted(c for c, _, _ in decide.calls) == ["A", "D"]
    timers = {t["customer_id"]: t for t in store.timers()}
    assert timers["B"]["state"] == "cancelled" and "purchase b2" in timers["B"]["reason"]
    assert timers["C"]["state"] == "cancelled" and timers["A"]["state"] == "fired"
    assert engine.fire_step(t0 + 20 * MIN)["fired"] == 0  # fired once
    _post(log, [_ev("a1", "A", "add_to_cart", 0)])  # a replayed event starts nothing new
    assert engine.fire_step(t0 + 21 * MIN)["scheduled"] == 0

    assert engine.deliver_step(t0 + 21 * MIN)["delivered"] == 2
    for headers, body in receiver.got:
        assert verify(SECRET, headers, body)
        assert not verify("another-secret", headers, body)
        payload = json.loads(body)
        assert headers["Idempotency-Key"] == payload["trigger_id"] == f"abandoned_cart:{payload['cause']['event_id']}"
        assert payload["decision"]["offers"][0]["channel"] == "email"
        assert payload["due_at"] == "2025-03-04T10:15:00Z"
    assert engine.deliver_step(t0 + 22 * MIN)["delivered"] == 0  # delivered once
    engine.close()


def test_a_receiver_down_gets_every_decision_once_it_is_back_and_timers_survive_a_restart(tmp_path, open_store, receiver):
    log = EventLog(tmp_path / "events.sqlite")
    t0 = to_us(T0)
    decide = Decider()
    engine = TriggerEngine(parse_triggers(_config(receiver.url)), open_store("t"), log,
                           decide, secret=SECRET)
    _post(log, [_ev(f"x{i}", f"K{i}", "add_to_cart", 0) for i in range(3)])
    assert engine.fire_step(t0 + MIN)["scheduled"] == 3
    engine.close()
    engine.store.close()
    # a restart: a new engine on the same files finds the timers where they were
    engine = TriggerEngine(parse_triggers(_config(receiver.url)), open_store("t"), log,
                           decide, secret=SECRET)
    decide.fail = True  # the decision log is down at the deadline: the timers wait
    assert engine.fire_step(t0 + 15 * MIN)["waiting"] == 1 and not decide.calls
    decide.fail = False
    assert engine.fire_step(t0 + 16 * MIN)["fired"] == 3
    receiver.down = True
    now = t0 + 16 * MIN
    assert engine.deliver_step(now)["retrying"] == 3
    for _ in range(4):  # down for a minute: attempts back off (1 s, 2 s, 4 s, 4 s ...)
        now += 15_000_000
        engine.deliver_step(now)
    assert not receiver.got and {o["status"] for o in engine.store.outbox()} == {"pending"}
    receiver.down = False
    now += 5_000_000  # the longest backoff is 4 s: every row is due again
    assert engine.deliver_step(now)["delivered"] == 3
    keys = [h["Idempotency-Key"] for h, _ in receiver.got]
    assert sorted(keys) == [f"abandoned_cart:x{i}" for i in range(3)]
    assert all(o["status"] == "delivered" and o["attempts"] >= 2 for o in engine.store.outbox())
    engine.close()


def test_gives_up_after_max_attempts_and_without_a_webhook_keeps_the_decision(tmp_path, open_store):
    log = EventLog(tmp_path / "events.sqlite")
    t0 = to_us(T0)
    _post(log, [_ev("x", "K", "add_to_cart", 0)])
    kept = TriggerEngine(parse_triggers(_config(None)), open_store("a"), log, Decider())
    kept.fire_step(t0 + 15 * MIN)
    assert [o["status"] for o in kept.store.outbox()] == ["kept"]
    dead = TriggerEngine(parse_triggers(_config("http://127.0.0.1:9/none", max_attempts=5)), open_store("b"),
                         log, Decider(), secret=SECRET)
    dead.fire_step(t0 + 15 * MIN)
    now = t0 + 15 * MIN
    for _ in range(5):
        dead.deliver_step(now)
        now += 10_000_000
    (row,) = dead.store.outbox()
    assert row["status"] == "failed" and row["attempts"] == 5 and row["last_error"]


def test_a_webhook_needs_its_secret_in_the_environment(tmp_path, open_store, monkeypatch):
    monkeypatch.delenv("CVM_WEBHOOK_SECRET", raising=False)
    with pytest.raises(TriggerConfigError, match="set CVM_WEBHOOK_SECRET"):
        TriggerEngine(parse_triggers(_config("http://127.0.0.1:9/x")), open_store("t"),
                      EventLog(tmp_path / "events.sqlite"), Decider())


def test_a_score_crossing_fires_once_per_crossing(tmp_path, open_store):
    log = EventLog(tmp_path / "events.sqlite")
    t0 = to_us(T0)
    cfg = parse_triggers({"triggers": [{"name": "churn_up", "when": {"score": "churn_probability", "above": 0.7}}]})
    scores = {"A": 0.8, "B": 0.9, "C": 0.2}
    probe = lambda ids: {i: Probe(scores={"churn_probability": scores[i]},
                                  before_scores={"churn_probability": 0.75 if i == "B" else 0.5}) for i in ids}
    decide = Decider()
    engine = TriggerEngine(cfg, open_store("t"), log, decide, probe=probe)
    _post(log, [_ev("1", "A", "view", 0), _ev("2", "B", "view", 0), _ev("3", "C", "view", 0)])
    engine.fire_step(t0 + MIN)
    assert [c for c, _, _ in decide.calls] == ["A"]  # B was above already this morning
    _post(log, [_ev("4", "A", "view", 2)])
    engine.fire_step(t0 + 3 * MIN)
    assert len(decide.calls) == 1  # still above: no new crossing
    scores["A"] = 0.1
    _post(log, [_ev("5", "A", "view", 4)])
    engine.fire_step(t0 + 5 * MIN)
    scores["A"] = 0.95
    _post(log, [_ev("6", "A", "view", 6)])
    engine.fire_step(t0 + 7 * MIN)
    assert [c for c, _, _ in decide.calls] == ["A", "A"]  # down, then up again: a second crossing


def test_a_segment_entry_fires_when_the_customer_enters_and_not_while_inside(tmp_path, open_store):
    log = EventLog(tmp_path / "events.sqlite")
    t0 = to_us(T0)
    cfg = parse_triggers({"triggers": [{"name": "lapsing", "when": {"segment_entry": "cart_no_buy"}}]})
    inside = {"A": True, "B": True}
    probe = lambda ids: {i: Probe(segments=frozenset({"cart_no_buy"}) if inside[i] else frozenset(),
                                  before_segments=frozenset({"cart_no_buy"}) if i == "B" else frozenset())
                         for i in ids}
    decide = Decider()
    engine = TriggerEngine(cfg, open_store("t"), log, decide, probe=probe)
    _post(log, [_ev("1", "A", "add_to_cart", 0), _ev("2", "B", "add_to_cart", 0)])
    engine.fire_step(t0 + MIN)
    assert [c for c, _, _ in decide.calls] == ["A"]  # B was in the segment this morning already
    timer = engine.store.timers()[0]
    assert timer["trigger_id"] == "lapsing:A:1" and timer["cause_event_id"] == "1"


def test_a_segment_entry_trigger_needs_a_real_time_segment(tmp_path):
    from serving.settings import ServiceSettings
    from serving.triggers import realtime_segments

    cfg = parse_triggers({"triggers": [{"name": "x", "when": {"segment_entry": "big_lapsed"}}]})
    settings = ServiceSettings(home=tmp_path, dataset="completejourney", no_auth=True, triggers=tmp_path / "t.yaml")
    with pytest.raises(TriggerConfigError, match="segment_entry 'big_lapsed' is not a real-time segment"):
        realtime_segments(settings, cfg)
    ok = parse_triggers({"triggers": [{"name": "x", "when": {"segment_entry": "produce_lapsers"}}]})
    assert [s.name for s in realtime_segments(settings, ok)] == ["produce_lapsers"]


def test_one_process_holds_the_lease_at_a_time(open_store):
    store = open_store("lease")
    assert store.take_lease("a", 0, 10)
    assert not store.take_lease("b", 5, 10)  # a holds it until 10
    assert store.take_lease("a", 5, 10)  # renewed until 15
    assert not store.take_lease("b", 14, 10)
    assert store.take_lease("b", 15, 10)  # a did not renew: b takes over
    store.release_lease("a")  # not a's to release
    assert not store.take_lease("a", 16, 10)
    store.release_lease("b")
    assert store.take_lease("a", 16, 10)


def test_redis_state_and_log_give_the_same_timers_and_outbox_as_sqlite(tmp_path, redis_url, receiver):
    """One scenario (carts, a cancelling purchase, an out-of-order one, a replay, a receiver down
    then back) on the embedded log and store and on Redis for both: the same rows, field by field."""
    from sources.event_log.redis_log import RedisEventLog

    run = uuid.uuid4().hex[:8]
    t0 = to_us(T0)
    events = [_ev("a1", "A", "add_to_cart", 0), _ev("b1", "B", "add_to_cart", 0),
              _ev("b2", "B", "purchase", 5, order_id="o1", amount=3.0),
              _ev("c2", "C", "purchase", 3, order_id="o2", amount=4.0), _ev("c1", "C", "add_to_cart", 0),
              _ev("d1", "D", "add_to_cart", 2)]
    seen = {}
    for backend in ("sqlite", "redis"):
        if backend == "sqlite":
            log, store = EventLog(tmp_path / "e.sqlite"), TriggerStore(tmp_path / "t.sqlite")
        else:
            log, store = RedisEventLog(redis_url, f"p-{run}"), RedisTriggerStore(redis_url, f"p-{run}")
        engine = TriggerEngine(parse_triggers(_config(receiver.url)), store, log, Decider(), secret=SECRET)
        _post(log, events)
        engine.fire_step(t0 + MIN)
        _post(log, events[:2])  # replayed
        engine.fire_step(t0 + 15 * MIN)  # A fires; D is due at 17 min
        receiver.down = True
        engine.deliver_step(t0 + 16 * MIN)
        receiver.down = False
        engine.fire_step(t0 + 17 * MIN)
        engine.deliver_step(t0 + 18 * MIN)
        seen[backend] = (store.timers(), store.outbox(), store.cursor(), store.next_due_us())
        engine.close()
        store.close()
    assert seen["redis"] == seen["sqlite"]
    timers, outbox, cursor, next_due = seen["sqlite"]
    assert [(t["customer_id"], t["state"]) for t in timers] == [("A", "fired"), ("B", "cancelled"),
                                                                  ("C", "cancelled"), ("D", "fired")]
    assert [(o["customer_id"], o["status"], o["attempts"]) for o in outbox] == [("A", "delivered", 2),
                                                                              ("D", "delivered", 1)]
    assert cursor == 6 and next_due is None
