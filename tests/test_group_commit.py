"""Group commit of live decisions (``scoring.decisions.group_commit``): concurrent decisions
share a transaction and still respect the caps, one caller's error stays its own, a store
error fails the whole group, and two committers on PostgreSQL never deadlock."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from scoring.decisions import (
    DecisionStoreUnavailable,
    GroupCommitter,
    PostgresDecisionStore,
    SQLiteDecisionStore,
)
from scoring.decisions import to_us as us
from scoring.live import decide_one_grouped
from scoring.nbo import CategorySpend
from tests import test_decision_loop
from tests.test_decision_loop import T0, VERSIONS, _decide, catalog, scores

_DATABASES = itertools.count()
#: the decision loop's log fixture: SQLite, and PostgreSQL against a real server
store = test_decision_loop.store


def _grouped(committer: GroupCommitter, cid: str, when, cat=None):
    cat = cat or catalog()
    return decide_one_grouped(cid, scores([cid]), catalog=cat, spend=CategorySpend({}), history=None,
                              committer=committer, now_us=us(when), versions=VERSIONS)


def test_decisions_of_one_group_see_each_other(store):
    """Five decisions for one customer in one transaction, cap 2 contacts in 7 days and a
    3-day cooldown on offer a: a, then b (a cools down), then nothing three times."""
    from scoring.live import _decider, since_us

    cat = catalog()
    items = []
    for _ in range(5):
        fn, _out = _decider("x", scores(["x"]), catalog=cat, spend=CategorySpend({}), history=None,
                            now_us=us(T0), versions=VERSIONS, k=3, channel=None, exclude_offer_ids=(),
                            history_error=None, source="api")
        items.append(("x", since_us(cat, us(T0)), fn))
    got = store.decide_group(items)
    assert [d.offer_id for d in got] == ["a", "b", None, None, None]
    assert store.count() == 5


def test_fifty_concurrent_requests_one_short_of_a_cap_get_one_offer(store):
    assert _decide(store, "hot", T0).offer_id == "a"  # one contact: one short of the cap of 2
    committer = GroupCommitter(store)

    async def fifty():
        return await asyncio.gather(*(_grouped(committer, "hot", T0 + timedelta(minutes=1)) for _ in range(50)))

    got = asyncio.run(fifty())
    committer.close()
    assert sum(m.decision.offer_id is not None for m in got) == 1
    assert store.count() == 51
    assert committer.grouped == 50
    logged = set(store.decisions()["decision_id"])
    assert {m.decision.decision_id for m in got} <= logged  # every answer's decision is in the log


def test_requests_queued_behind_a_busy_log_commit_together(tmp_path: Path):
    """While another writer holds the SQLite write lock, the first group waits and the
    rest queue: once the lock is released they commit in one more group, not 49."""
    store = SQLiteDecisionStore(tmp_path / "d.sqlite")
    store.count()  # creates the tables
    blocker = sqlite3.connect(tmp_path / "d.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    committer = GroupCommitter(store)
    futures = [committer.submit("c", 0, lambda live: None)]
    # the writer has taken the first item and waits for the lock: queue the others now
    threading.Event().wait(0.2)
    futures += [committer.submit(f"c{i}", 0, lambda live: None) for i in range(49)]
    blocker.execute("COMMIT")
    assert all(f.result(timeout=30) is None for f in futures)
    committer.close()
    assert committer.grouped == 50 and committer.groups <= 3, committer.groups
    blocker.close()
    store.close()


def test_an_error_in_one_choose_fails_only_its_caller(store):
    committer = GroupCommitter(store)

    def boom(live):
        raise ValueError("bad channel")

    made = [committer.submit("y", 0, boom)] + [
        asyncio.run(_grouped(committer, f"z{i}", T0)) for i in range(3)]
    with pytest.raises(ValueError, match="bad channel"):
        made[0].result(timeout=30)
    assert all(m.decision.offer_id == "a" for m in made[1:])
    committer.close()
    assert store.count() == 3


def test_a_store_that_cannot_be_written_fails_every_caller(tmp_path: Path):
    (tmp_path / "not-a-file").mkdir()
    committer = GroupCommitter(SQLiteDecisionStore(tmp_path / "not-a-file"))
    futures = [committer.submit(f"c{i}", 0, lambda live: None) for i in range(5)]
    for f in futures:
        with pytest.raises(DecisionStoreUnavailable):
            f.result(timeout=30)
    committer.close()
    with pytest.raises(DecisionStoreUnavailable, match="closed"):
        committer.submit("c", 0, lambda live: None)


@pytest.mark.server
def test_two_committers_on_postgres_share_customers_without_deadlock(postgres_server):
    """Two service workers' committers deciding for the same ten customers in opposite
    orders: the groups take their advisory locks in key order, so none waits for the
    other forever; each customer gets at most the cap of 2 offers (7-day window)."""
    url = postgres_server.create_database(f"group_{next(_DATABASES)}")
    stores = [PostgresDecisionStore(url), PostgresDecisionStore(url)]
    committers = [GroupCommitter(s) for s in stores]
    ids = [f"k{i}" for i in range(10)]

    async def worker(committer, order):
        return await asyncio.gather(*(_grouped(committer, cid, T0) for _ in range(5) for cid in order))

    async def both():
        return await asyncio.gather(worker(committers[0], ids), worker(committers[1], ids[::-1]))

    results = asyncio.run(asyncio.wait_for(both(), timeout=120))
    for c in committers:
        c.close()
    offers: dict[str, int] = {}
    for made in (m for part in results for m in part):
        offers[made.decision.customer_id] = offers.get(made.decision.customer_id, 0) + (
            made.decision.offer_id is not None)
    assert offers == dict.fromkeys(ids, 2)
    assert stores[0].count() == 100
    for s in stores:
        s.close()
