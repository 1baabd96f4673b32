"""The abandoned-cart trigger end to end on a real ``cvm serve`` with two workers: events posted
over HTTP, a logged decision signed to a real receiver, cancelled by a purchase."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import yaml

from base.processes import wait_until
from scoring.triggers.webhook import verify
from tests.serving_fixtures import AS_OF, start_server, stop_server
from tests.test_triggers import Receiver

pytestmark = pytest.mark.server
SECRET = "service-test-secret"


def test_abandoned_cart_is_decided_logged_and_delivered_once_and_a_purchase_cancels_it(served_home, tmp_path):
    receiver = Receiver()
    rules = tmp_path / "triggers.yaml"
    rules.write_text(yaml.safe_dump({
        "webhook": {"url": receiver.url, "secret_env": "CVM_WEBHOOK_SECRET", "backoff_seconds": 0.2,
                    "max_backoff_seconds": 1},
        "triggers": [{"name": "abandoned_cart", "when": {"event": "add_to_cart"},
                      "unless": {"event": "purchase", "within_minutes": 0.05}}]}))  # 3 s
    server = start_server(served_home, tmp_path / "server.log", extra_env={"CVM_WEBHOOK_SECRET": SECRET},
                          args=["--triggers", str(rules), "--workers", "2"])
    try:
        ids = pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={AS_OF}",
                              columns=["customer_id"])["customer_id"].tolist()
        carts, bought = ids[3:9], ids[9]
        now = datetime.now(UTC)
        stamp = lambda s: (now + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")
        events = [{"event_id": f"cart-{i}", "customer_id": cid, "type": "add_to_cart", "timestamp": stamp(0)}
                  for i, cid in enumerate(carts)]
        events += [{"event_id": "cart-x", "customer_id": bought, "type": "add_to_cart", "timestamp": stamp(0)},
                   {"event_id": "buy-x", "customer_id": bought, "type": "purchase", "timestamp": stamp(1),
                    "properties": {"order_id": "o-trig", "amount": 9.5}}]
        with server.client() as c:
            assert c.post("/events", json={"events": events}).status_code == 200
        states_db = served_home.home / "triggers" / served_home.name / "triggers.sqlite"

        ours = [e["event_id"] for e in events if e["type"] == "add_to_cart"]

        def closed() -> dict:  # this test's timers (the session's event log holds other tests' events too)
            with sqlite3.connect(states_db) as con:
                return dict(con.execute("SELECT customer_id, state FROM timers WHERE state != 'pending' AND "
                                        "cause_event_id IN (SELECT value FROM json_each(?))",
                                        (json.dumps(ours),)).fetchall())

        wait_until(lambda: len(closed()) == len(carts) + 1, timeout=30, interval=0.1, what="every timer closed")
        assert closed() == {**{cid: "fired" for cid in carts}, bought: "cancelled"}
        db = served_home.home / "decisions" / served_home.name / "decisions.sqlite"
        with sqlite3.connect(db) as con:
            logged = dict(con.execute("SELECT customer_id, offer_id FROM decisions WHERE source = "
                                      "'trigger:abandoned_cart' AND customer_id IN (SELECT value FROM json_each(?))",
                                      (json.dumps([*carts, bought]),)).fetchall())
        assert set(logged) == set(carts)  # one logged decision per fired trigger, none for the buyer
        with_offer = {cid for cid, offer in logged.items() if offer is not None}
        assert with_offer, "no trigger decision made an offer"
        wait_until(lambda: sum(json.loads(b)["cause"]["event_id"] in ours for _, b in receiver.got) >= len(with_offer),
                   timeout=30, interval=0.1, what="the deliveries")
        time.sleep(2)  # long enough for a duplicate or a wrong delivery to show
        mine = [(h, b) for h, b in receiver.got if json.loads(b)["cause"]["event_id"] in ours]
        got = [json.loads(b) for _, b in mine]
        assert sorted(p["customer_id"] for p in got) == sorted(with_offer)  # each once; holds are not sent
        for (headers, body), payload in zip(mine, got, strict=True):
            assert verify(SECRET, headers, body)
            assert headers["Idempotency-Key"] == payload["trigger_id"] == f"abandoned_cart:{payload['cause']['event_id']}"
            fired, due = datetime.fromisoformat(payload["fired_at"]), datetime.fromisoformat(payload["due_at"])
            assert timedelta(0) <= fired - due < timedelta(seconds=1)  # within 1 s of its deadline
        assert SECRET not in server.log_text()
    finally:
        stop_server(server)
        receiver.close()
