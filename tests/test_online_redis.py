"""The online store on a real Redis server: the same answers as the embedded store, an atomic
switch, and a server restart that readers survive (an error naming Redis while it is down)."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from base.home import Home
from features.online import open_online_store
from features.online_redis import RedisOnlineStore
from features.online_store import SnapshotUnavailableError, SQLiteOnlineStore
from tests.test_online_store import (
    AS_OF,
    GOLDEN_ROWS,
    assert_same_record,
    expected,
    k_of,
    table_of,
    uniform_snapshot,
    write_snapshot,
)

pytestmark = pytest.mark.server


@pytest.fixture
def dataset() -> str:
    return f"t{uuid.uuid4().hex[:8]}"  # one key space per test on the session's server


def test_redis_answers_what_the_embedded_store_answers(tmp_path, redis_url, dataset):
    snap = write_snapshot(tmp_path / "snap", table_of(GOLDEN_ROWS))
    contacts = tmp_path / "contacts"
    contacts.mkdir()
    pd.DataFrame({"customer_id": ["c1", "c2"], "campaign_id": ["k1", "k2"],
                  "timestamp": pd.to_datetime(["2024-03-01 10:00", "2024-03-02 11:00"])}).to_parquet(
        contacts / "part-0.parquet")
    redis = RedisOnlineStore(redis_url, dataset)
    sqlite = SQLiteOnlineStore(tmp_path / "online")
    for store in (redis, sqlite):
        store.publish(snap, as_of=AS_OF, metadata={"fingerprint": "f"}, contacts=contacts)
    for row in GOLDEN_ROWS:
        assert_same_record(redis.get(row[0]), expected(row))
    assert redis.get("nobody") is None
    ids = ["c3", "nobody", "c1", "c1"]
    pd.testing.assert_frame_equal(redis.get_many(ids), sqlite.get_many(ids))
    pd.testing.assert_frame_equal(redis.contacts(), sqlite.contacts())
    assert sorted(redis.sample_ids(10)) == sorted(sqlite.sample_ids(10)) == ["c1", "c2", "c3", "c4"]
    assert redis.current().metadata == {"fingerprint": "f"} and redis.current().rows == 4
    assert redis.current().columns == sqlite.current().columns


def test_a_publish_switches_readers_at_once_and_old_versions_are_pruned(tmp_path, redis_url, dataset):
    store = RedisOnlineStore(redis_url, dataset, keep=2)
    reader = RedisOnlineStore(redis_url, dataset)  # another worker
    for k in (1, 2, 3):
        store.publish(uniform_snapshot(tmp_path / f"s{k}", k), as_of=AS_OF)
        assert k_of(reader.get("c5")) == {k}  # the next read sees the new snapshot, never a mix
        frame = reader.get_many([f"c{i}" for i in range(40)])
        assert set(frame["n"]) == {k}
    keys = {k.decode() for k in store._redis.keys(f"cvm:{dataset}:v:*:f")}
    assert len(keys) == 2  # keep=2


def test_readers_name_redis_while_it_is_down_and_recover_when_it_is_back(tmp_path):
    from tests.db_servers import start_redis

    server = start_redis(tmp_path / "redis")
    try:
        url, port = server.url, server.port
        store = open_online_store(Home(tmp_path / "home"), "shop", redis_url=url)
        store.publish(uniform_snapshot(tmp_path / "s1", 1), as_of=AS_OF)
        assert k_of(store.get("c1")) == {1}
        server.stop()
        with pytest.raises(SnapshotUnavailableError, match=r"Redis \(127.0.0.1:\d+/0\) cannot be read"):
            store.get("c1")
        # no persistence in the test server: a restarted Redis is empty until the next publish
        server = start_redis(tmp_path / "redis", port=port)
        publisher = RedisOnlineStore(url, "shop")
        publisher.publish(uniform_snapshot(tmp_path / "s2", 2), as_of=AS_OF)
        assert k_of(store.get("c1")) == {2}  # the same reader reconnected by itself
    finally:
        server.stop()
