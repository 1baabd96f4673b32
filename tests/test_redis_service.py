"""``cvm serve`` on the Redis online store (``CVM_REDIS_URL``) with two workers: the same
scores, a 503 naming Redis while it is down, recovery without a restart once it is back."""

from __future__ import annotations

import pytest

from base.processes import wait_until
from features.online_redis import RedisOnlineStore
from features.snapshot import CONTACTS_DIR, read_metadata
from tests.serving_fixtures import AS_OF, start_server, stop_server

pytestmark = pytest.mark.server


def _snapshot(served):
    return served.home / "features" / served.name / f"as_of={AS_OF}"


def _publish(url: str, served) -> str:
    from datetime import date

    from features.online_fresh import publish_fresh

    snap = _snapshot(served)
    meta = read_metadata(snap.parent, date.fromisoformat(AS_OF))
    store = RedisOnlineStore(url, served.name)
    published = store.publish(snap, as_of=date.fromisoformat(AS_OF), contacts=snap / CONTACTS_DIR,
                              metadata={"fingerprint": meta["fingerprint"], "dataset": served.name,
                                        "feature_config": meta["feature_config"]})
    store.close()
    publish_fresh(served.home / "online" / served.name, snap, date.fromisoformat(AS_OF), published.version)
    return published.version


def test_the_service_reads_redis_and_recovers_from_a_redis_restart(served_home, tmp_path, server):
    from tests.db_servers import start_redis

    redis = start_redis(tmp_path / "redis")
    port = redis.port
    version = _publish(redis.url, served_home)
    rules = tmp_path / "triggers.yaml"  # timers and outbox on Redis too, shared by both workers
    rules.write_text('triggers: [{name: carted, when: {event: add_to_cart}, '
                     'unless: {event: purchase, within_minutes: 1}}]\n')
    ours = start_server(served_home, tmp_path / "server.log", extra_env={"CVM_REDIS_URL": redis.url},
                        args=["--workers", "2", "--triggers", str(rules)])

    def fired(event_id: str) -> list:
        from scoring.triggers.redis_store import RedisTriggerStore

        store = RedisTriggerStore(redis.url, served_home.name)
        try:
            return [(t["state"], o["status"] in ("kept", "skipped")) for t in store.timers()
                    if t["cause_event_id"] == event_id for o in store.outbox() if o["trigger_id"] == t["trigger_id"]]
        finally:
            store.close()

    try:
        ids = ["nobody", *RedisOnlineStore(redis.url, served_home.name).sample_ids(5)]
        body = {"customer_ids": ids, "reasons": False}
        with ours.client() as c, server.client() as embedded:
            got = c.post("/score", json=body).json()
            assert got["snapshot_version"] == version
            want = embedded.post("/score", json=body).json()  # the same snapshot from the SQLite store
            strip = lambda rs: [{k: v for k, v in r.items() if k != "freshness"} for r in rs]
            assert strip(got["results"]) == strip(want["results"])
            # an event posted to one worker goes to the Redis stream; every worker's next /score shows it
            buy = {"event_id": "redis-1", "customer_id": ids[1], "type": "purchase", "timestamp": f"{AS_OF}T08:00:00Z",
                   "properties": {"order_id": "redis-o1", "amount": 5.0}}
            assert c.post("/events", json={"events": [buy]}).json()["written"] == 1
            for _ in range(6):
                fresh = c.post("/score", json=body).json()["results"][1]["freshness"]
                assert (fresh["source"], fresh["events_applied"]) == ("events", 1)
            from sources.event_log.redis_log import RedisEventLog

            assert [r[1] for r in RedisEventLog(redis.url, served_home.name).tail(0, 10)] == ["redis-1"]
            cart = {"event_id": "cart-1", "customer_id": ids[2], "type": "add_to_cart",
                    "timestamp": f"{AS_OF}T09:00:00Z"}  # due a minute later: long past
            assert c.post("/events", json={"events": [cart]}).json()["written"] == 1
            wait_until(lambda: fired("cart-1") == [("fired", True)], timeout=30, interval=0.1,
                       what="the trigger fired from the Redis stream into the Redis outbox")
            redis.stop()
            down = c.post("/score", json=body)
            assert down.status_code == 503 and "Redis" in down.json()["error"], down.text
            assert down.headers["Retry-After"]
            refused = c.post("/events", json={"events": [dict(buy, event_id="redis-2")]})
            assert refused.status_code == 503 and "Redis" in refused.json()["error"], refused.text
            redis = start_redis(tmp_path / "redis", port=port)  # no persistence: publish again
            again = _publish(redis.url, served_home)

            def answers() -> bool:
                r = c.post("/score", json=body)
                return r.status_code == 200 and r.json()["results"][1]["found"]

            wait_until(answers, timeout=30, interval=0.2, what="the service reading the restarted Redis")
            for _ in range(4):  # both workers
                assert c.post("/score", json=body).status_code == 200
            wait_until(lambda: c.post("/score", json=body).json()["snapshot_version"] == again, timeout=30,
                       interval=0.5, what="the reload of the republished snapshot")
            # the restarted Redis lost the stream and the trigger state together: triggers go on
            assert c.post("/events", json={"events": [dict(cart, event_id="cart-2")]}).json()["written"] == 1
            wait_until(lambda: fired("cart-2") == [("fired", True)], timeout=30, interval=0.1,
                       what="the trigger engine working on the restarted Redis")
        assert "Traceback" not in ours.log_text()
    finally:
        stop_server(ours)
        redis.stop()
        from datetime import date

        from features.online_fresh import publish_fresh
        from features.online_store import SQLiteOnlineStore

        # the embedded store's snapshot gets its fresh base back for the other tests of the session
        embedded = SQLiteOnlineStore(served_home.home / "online" / served_home.name).current()
        publish_fresh(served_home.home / "online" / served_home.name, _snapshot(served_home),
                      date.fromisoformat(AS_OF), embedded.version)
