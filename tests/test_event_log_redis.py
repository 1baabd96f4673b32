"""The event log on a real Redis server behaves as the embedded one: idempotent by event_id, a
batch whole, read back in append order and by customer and type in event time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest

from profiles.events import ingest
from profiles.identifier_index import IdentifierLookup
from sources.event_log.redis_log import EventLogUnavailable, RedisEventLog
from sources.event_log.store import EventLog

pytestmark = pytest.mark.server
EMPTY = IdentifierLookup(pd.DataFrame({"id_type": [], "value": [], "customer_id": []}))
NOW = datetime(2025, 3, 4, 12, tzinfo=UTC)


def _ev(eid, cid, kind, hhmm, **props):
    return {"event_id": eid, "customer_id": cid, "type": kind, "timestamp": f"2025-03-04T{hhmm}:00Z",
            **({"properties": props} if props else {})}


BATCH = [_ev("e1", "A", "add_to_cart", "10:00"), _ev("e2", "A", "purchase", "10:05", order_id="o1", amount=3.5),
         _ev("e3", "B", "view", "09:00"), _ev("e1", "A", "add_to_cart", "10:00")]  # e1 twice in one batch


def test_redis_and_sqlite_logs_answer_alike(redis_url, tmp_path):
    logs = {"redis": RedisEventLog(redis_url, f"d{uuid.uuid4().hex[:8]}"), "sqlite": EventLog(tmp_path / "e.sqlite")}
    for log in logs.values():
        assert not log.exists() and log.tail(0, 10) == []
        counts = ingest(BATCH, log, EMPTY, now=NOW)
        assert (counts.received, counts.written, counts.duplicates) == (4, 3, 1)
        again = ingest(BATCH[:2] + [_ev("e4", "B", "purchase", "11:00", order_id="o2", amount=1.0)], log, EMPTY,
                       now=NOW)
        assert (again.written, again.duplicates) == (1, 2)
    redis, sqlite = logs["redis"], logs["sqlite"]
    assert [r[1:] for r in redis.tail(0, 10)] == [r[1:] for r in sqlite.tail(0, 10)]
    cursors = [r[0] for r in redis.tail(0, 10)]
    assert cursors == sorted(cursors) and [r[1] for r in redis.tail(cursors[1], 10)] == ["e3", "e4"]
    start = int(datetime(2025, 3, 4, 10, tzinfo=UTC).timestamp() * 1e6)
    for log in logs.values():
        assert log.first_between("A", "purchase", start, start + 10 * 60_000_000)[0] == "e2"
        assert log.first_between("A", "purchase", start, start + 5 * 60_000_000) is None  # [start, end)
    pd.testing.assert_frame_equal(redis.frame(), sqlite.frame(), check_dtype=False)


def test_an_unreachable_redis_is_an_error_naming_it_and_nothing_is_acknowledged(tmp_path):
    from tests.db_servers import start_redis

    server = start_redis(tmp_path / "redis")
    log = RedisEventLog(server.url, "down")
    ingest(BATCH[:1], log, EMPTY, now=NOW)
    server.stop()
    with pytest.raises(EventLogUnavailable, match=r"event log on Redis \(127.0.0.1:\d+/0\) cannot be reached"):
        ingest(BATCH[1:2], log, EMPTY, now=NOW)


def test_a_killed_durable_redis_keeps_every_acknowledged_event_once(tmp_path):
    """``redis-server`` with ``appendonly yes`` and ``appendfsync always`` SIGKILLed while a writer
    appends batches of 100: restarted on its files, it holds every batch acknowledged before the
    kill, none twice and none half-written (a batch is one script, one transaction in the AOF)."""
    import subprocess
    import sys
    import textwrap

    from tests.db_servers import start_redis

    server = start_redis(tmp_path / "redis", durable=True)
    port = server.port
    script = textwrap.dedent(f"""
        from datetime import UTC, datetime
        import pandas as pd
        from profiles.events import ingest
        from profiles.identifier_index import IdentifierLookup
        from sources.event_log.redis_log import RedisEventLog
        log = RedisEventLog({server.url!r}, "durable")
        lookup = IdentifierLookup(pd.DataFrame({{"id_type": [], "value": [], "customer_id": []}}))
        for b in range(100000):
            batch = [{{"event_id": f"b{{b}}-{{i}}", "customer_id": f"C{{i % 7}}", "type": "view",
                       "timestamp": "2025-03-04T10:00:00Z"}} for i in range(100)]
            ingest(batch, log, lookup, now=datetime(2025, 3, 4, 12, tzinfo=UTC))
            print(b, flush=True)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    acked = []
    try:
        for line in writer.stdout:  # acknowledgements as they come (no sleep), then the server dies
            acked.append(int(line))
            if len(acked) == 30:
                server.proc.kill()
                break
        for line in writer.stdout:  # replies that were on their way when the server died
            acked.append(int(line))
    finally:
        writer.kill()
        writer.wait()
        server.stop()
    server = start_redis(tmp_path / "redis", port=port, durable=True)
    try:
        frame = RedisEventLog(server.url, "durable").frame()
    finally:
        server.stop()
    assert frame["event_id"].is_unique
    have = set(frame["event_id"])
    assert all(f"b{b}-{i}" in have for b in acked for i in range(100))
    assert len(frame) % 100 == 0 and len(frame) >= 100 * len(acked)
