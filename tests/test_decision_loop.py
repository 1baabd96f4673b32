"""The closed loop's core on hand-built inputs: arms and pscores, the decision log, live
caps and cooldowns, outcome suppression, idempotent outcomes, concurrent deciders."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from base.processes import wait_until
from scoring.arms import assign, period_of, pscores
from scoring.catalog import Experiment, parse_catalog
from scoring.contacts import DAY_US, ContactHistory, live_state
from scoring.decide import choose
from scoring.decisions import Outcome, OutcomeError, PostgresDecisionStore, SQLiteDecisionStore, to_us
from scoring.decisions.records import DECISION_COLUMNS
from scoring.live import PolicyUnavailable, Versions, decide_one
from scoring.nbo import CategorySpend, CustomerScores, arbitrate

VERSIONS = Versions({"churn": "1"}, "t.1", "snap-1")
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def catalog(**experiment) -> object:
    return parse_catalog({
        "version": "t.1",
        "channels": ["email", "app"],
        "contact_policy": {"caps": [{"max_contacts": 2, "window_days": 7}]},
        "experiment": {"salt": "s", "period_days": 30, "control_share": 0.0, "exploration_share": 0.0,
                       **experiment},
        "offers": [
            {"id": "a", "name": "A", "type": "loyalty", "value": {"model": "fixed", "amount": 10.0},
             "channels": ["email"], "cooldown_days": 3,
             "suppression": [{"outcome": "reject", "count": 2, "within_days": 30, "pause_days": 60}]},
            {"id": "b", "name": "B", "type": "loyalty", "value": {"model": "fixed", "amount": 5.0},
             "channels": ["app"]},
            {"id": "c", "name": "C", "type": "loyalty", "value": {"model": "fixed", "amount": 1.0},
             "channels": ["app"]},
        ],
    })


def scores(ids: list[str]) -> CustomerScores:
    n = len(ids)
    return CustomerScores(
        customer_ids=ids, found=np.ones(n, dtype=bool), segment=np.full(n, "champions", dtype=object),
        churn_probability=np.full(n, 0.2), next_purchase_probability=np.full(n, 0.5),
        expected_orders=np.full(n, 2.0), clv=np.full(n, 100.0), avg_order_value=np.full(n, 20.0),
        cross_sell=np.zeros((n, 0)), categories=[], days_since_category=np.zeros((n, 0)))


# ----------------------------------------------------------------------------- arms

def test_arm_shares_match_the_configuration_on_100k_ids():
    exp = Experiment(salt="x", control_share=0.05, exploration_share=0.10)
    arms, _ = assign([f"c{i}" for i in range(100_000)], exp, date(2026, 1, 1))
    observed = [int((arms == a).sum()) for a in ("control", "exploration", "policy")]
    expected = [5_000, 10_000, 85_000]
    assert sum(observed) == 100_000
    # chi-square goodness of fit, 2 degrees of freedom: p above 0.001 unless the hash is biased
    assert stats.chisquare(observed, expected).pvalue > 0.001, observed


def test_assignment_is_stable_within_a_period_and_redrawn_after_it():
    exp = Experiment(salt="x", period_days=30, epoch=date(2026, 1, 1))
    ids = [f"c{i}" for i in range(20_000)]
    first, _ = assign(ids, exp, date(2026, 1, 1))
    same, _ = assign(ids, exp, datetime(2026, 1, 30, 23, 59, tzinfo=UTC))
    later, _ = assign(ids, exp, date(2026, 1, 31))
    assert period_of(date(2026, 1, 30), exp) == 0 and period_of(date(2026, 1, 31), exp) == 1
    assert (first == same).all()
    # a new period re-draws independently: an id keeps its arm with probability
    # 0.05^2 + 0.05^2 + 0.9^2 = 0.815, so 18.5 % move (sd 0.27 points on 20k ids)
    moved = float((first != later).mean())
    assert 0.175 < moved < 0.195
    other_salt, _ = assign(ids, Experiment(salt="y", period_days=30, epoch=date(2026, 1, 1)), date(2026, 1, 1))
    assert (first != other_salt).any()


def test_pscores_by_hand():
    exp = Experiment(control_share=0.1, exploration_share=0.2)  # policy share 0.7
    arms = np.array(["control", "policy", "exploration", "exploration", "policy"], dtype=object)
    n_eligible = np.array([4, 4, 4, 4, 0])
    first_is_top = np.array([False, True, True, False, False])
    # control: 0.1; policy: 0.7 + 0.2 / 4 = 0.75; exploration drawing the top: 0.2/4 + 0.7 = 0.75;
    # exploration drawing another: 0.2 / 4 = 0.05; nothing eligible: every arm shows nothing, 1
    assert pscores(arms, n_eligible, first_is_top, exp) == pytest.approx([0.1, 0.75, 0.75, 0.05, 1.0])


def test_choice_per_arm_and_the_pscores_sum_to_one_over_actions():
    cat = catalog(control_share=0.2, exploration_share=0.3)
    ids = [f"c{i}" for i in range(4000)]
    res = arbitrate(scores(ids), cat, CategorySpend({}))
    c = choose(ids, cat, res, T0)
    assert (c.policy_top == 0).all()  # offer a (value 10) is the policy's choice for everyone
    assert (c.first[c.arm == "control"] == -1).all() and (c.first[c.arm == "policy"] == 0).all()
    explored = c.first[c.arm == "exploration"]
    assert set(np.unique(explored)) == {0, 1, 2}
    # the logging policy's distribution over {none, a, b, c} for one customer sums to 1:
    # control 0.2 + a (0.5 + 0.3/3) + b 0.1 + c 0.1
    by_first = {int(j): float(p) for j, p in zip(c.first, c.pscore, strict=True)}
    assert by_first[-1] + by_first[0] + by_first[1] + by_first[2] == pytest.approx(1.0)
    assert by_first[0] == pytest.approx(0.6) and by_first[1] == pytest.approx(0.1)
    # exploration puts its pick first, then the policy's order of the others
    row = int(np.flatnonzero((c.arm == "exploration") & (c.first == 2))[0])
    assert list(c.order[row]) == [2, 0, 1]


# ----------------------------------------------------------------------------- live contact policy

_DATABASES = iter(range(10_000))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def store(request, tmp_path: Path):
    """The embedded log, and the PostgreSQL one against a real server (a fresh database each)."""
    if request.param == "sqlite":
        s = SQLiteDecisionStore(tmp_path / "d.sqlite")
    else:
        server = request.getfixturevalue("postgres_server")
        s = PostgresDecisionStore(server.create_database(f"loop_{next(_DATABASES)}"))
    yield s
    s.close()


def _decide(store, cid, when, cat=None):
    cat = cat or catalog()
    return decide_one(cid, scores([cid]), catalog=cat, spend=CategorySpend({}), history=None, store=store,
                      now_us=to_us(when), versions=VERSIONS).decision


def test_caps_and_cooldowns_count_logged_decisions(store):
    d1 = _decide(store, "x", T0)
    assert (d1.offer_id, d1.arm, d1.pscore) == ("a", "policy", 1.0)
    d2 = _decide(store, "x", T0 + timedelta(hours=1))
    assert d2.offer_id == "b"  # a is in its 3-day cooldown
    d3 = _decide(store, "x", T0 + timedelta(hours=2))
    assert d3.offer_id is None  # the cap of 2 contacts in 7 days is reached; the decision is still logged
    assert store.count() == 3
    # less than 7 days after the first contact: still capped; 7 days after it, one contact is out of the window
    assert _decide(store, "x", T0 + timedelta(days=6, hours=23)).offer_id is None
    assert _decide(store, "x", T0 + timedelta(days=7)).offer_id == "a"
    # another customer is not affected
    assert _decide(store, "y", T0 + timedelta(hours=2)).offer_id == "a"
    store.close()


def test_a_decision_never_shown_is_released(store):
    d1, d2 = _decide(store, "x", T0), _decide(store, "x", T0)
    assert _decide(store, "x", T0).offer_id is None
    counts = store.record_outcomes([Outcome(outcome_id="o1", decision_id=d1.decision_id, type="not_shown",
                                            timestamp=T0)])
    assert counts.released == 1
    again = _decide(store, "x", T0 + timedelta(minutes=1))
    assert again.offer_id == "a" and d2.offer_id == "b"  # a's cooldown came from d1, now released
    store.close()


def test_outcome_suppression_pauses_the_offer(store):
    d = _decide(store, "x", T0)
    rejects = [Outcome(outcome_id=f"r{i}", decision_id=d.decision_id, type="reject",
                       timestamp=T0 + timedelta(days=i * 20)) for i in range(2)]  # 20 days apart: within 30
    store.record_outcomes(rejects)
    # after the 2nd reject (day 20) a is paused 60 days: days 21 and 79 still paused, day 80 free again
    assert _decide(store, "x", T0 + timedelta(days=21)).offer_id == "b"
    assert _decide(store, "x", T0 + timedelta(days=79, hours=23)).offer_id == "b"
    assert _decide(store, "x", T0 + timedelta(days=81)).offer_id == "a"
    store.close()


def test_rejects_further_apart_than_the_window_do_not_suppress():
    cat = catalog()
    outcomes = pd.DataFrame({"customer_id": ["x", "x"], "offer_id": ["a", "a"], "type": ["reject", "reject"],
                             "occurred_us": [to_us(T0), to_us(T0 + timedelta(days=31))]})
    state = live_state(["x"], cat, pd.DataFrame(columns=["customer_id", "offer_id", "decided_us"]), outcomes,
                       to_us(T0 + timedelta(days=32)))
    assert not state.suppressed.any()
    outcomes.loc[1, "occurred_us"] = to_us(T0 + timedelta(days=30))
    state = live_state(["x"], cat, pd.DataFrame(columns=["customer_id", "offer_id", "decided_us"]), outcomes,
                       to_us(T0 + timedelta(days=32)))
    assert state.suppressed[0].tolist() == [True, False, False]


def test_history_before_the_snapshot_and_live_decisions_count_together(tmp_path: Path):
    cat = parse_catalog({**catalog().model_dump(mode="json"),
                         "offers": [dict(o, campaign_ids=["C1"]) if o["id"] == "a" else o
                                    for o in catalog().model_dump(mode="json")["offers"]]})
    history = ContactHistory.from_frame(pd.DataFrame({"customer_id": ["x"], "campaign_id": ["C1"],
                                                      "timestamp": [pd.Timestamp("2026-03-09 10:00")]}),
                                        date(2026, 3, 10))
    store = SQLiteDecisionStore(tmp_path / "d.sqlite")
    first = decide_one("x", scores(["x"]), catalog=cat, spend=CategorySpend({}), history=history, store=store,
                       now_us=to_us(T0), versions=VERSIONS).decision
    assert first.offer_id == "b"  # a: cooldown from the dataset's contact the day before the snapshot
    second = decide_one("x", scores(["x"]), catalog=cat, spend=CategorySpend({}), history=history, store=store,
                        now_us=to_us(T0), versions=VERSIONS).decision
    assert second.offer_id is None  # 1 historical + 1 logged contact = the cap of 2
    with pytest.raises(PolicyUnavailable, match="contact history unavailable"):
        decide_one("x", scores(["x"]), catalog=cat, spend=CategorySpend({}), history=None, store=store,
                   now_us=to_us(T0), versions=VERSIONS, history_error="disk I/O error")
    assert store.count() == 2  # the refused decision was not logged
    store.close()


# ----------------------------------------------------------------------------- outcomes

def test_outcomes_are_idempotent_and_a_bad_batch_writes_nothing(store):
    d = _decide(store, "x", T0)
    batch = [Outcome(outcome_id="o1", decision_id=d.decision_id, type="impression", timestamp=T0),
             Outcome(outcome_id="o2", decision_id=d.decision_id, type="convert", timestamp=T0, value=12.5),
             Outcome(outcome_id="o1", decision_id=d.decision_id, type="impression", timestamp=T0)]
    assert store.record_outcomes(batch).to_dict() == {"received": 3, "written": 2, "duplicates": 1, "released": 0}
    assert store.record_outcomes(batch[:2]).to_dict() == {"received": 2, "written": 0, "duplicates": 2,
                                                          "released": 0}
    bad = [Outcome(outcome_id="o3", decision_id=d.decision_id, type="click", timestamp=T0),
           Outcome(outcome_id="o4", decision_id="nope", type="click", timestamp=T0)]
    with pytest.raises(OutcomeError, match="unknown decision.*nope"):
        store.record_outcomes(bad)
    out = store.outcomes()
    assert sorted(out["outcome_id"]) == ["o1", "o2"]
    assert out.set_index("outcome_id").loc["o2", "value"] == 12.5
    assert out["customer_id"].unique().tolist() == ["x"] and out["offer_id"].unique().tolist() == ["a"]
    store.close()


# ----------------------------------------------------------------------------- concurrency

_RACER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_decision_loop import _decide, T0
from datetime import timedelta
from scoring.decisions import SQLiteDecisionStore
store = SQLiteDecisionStore({path!r})
store.count()  # connected before the start
Path({ready!r}).touch()
while not Path({go!r}).exists():
    time.sleep(0.001)
got = [_decide(store, "hot", T0 + timedelta(minutes=1)).offer_id for _ in range(25)]
Path({out!r}).write_text(json.dumps(got))
"""


def test_two_processes_racing_for_one_customer_one_short_of_a_cap(tmp_path: Path):
    import json
    import subprocess
    import sys

    path = tmp_path / "d.sqlite"
    store = SQLiteDecisionStore(path)
    assert _decide(store, "hot", T0).offer_id == "a"  # one contact: one short of the cap of 2
    go = tmp_path / "go"
    procs, outs = [], []
    for k in range(2):
        out, ready = tmp_path / f"out{k}.json", tmp_path / f"ready{k}"
        code = _RACER.format(root=str(Path(__file__).parents[1]), path=str(path), ready=str(ready), go=str(go),
                             out=str(out))
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
        outs.append((out, ready))
    wait_until(lambda: all(r.exists() for _, r in outs), timeout=120)
    go.touch()  # both start deciding at once
    for p in procs:
        assert p.wait(timeout=120) == 0
    got = [o for out, _ in outs for o in json.loads(out.read_text())]
    assert len(got) == 50
    assert sum(o is not None for o in got) == 1, got  # exactly one of 50 gets an offer
    assert store.count() == 51
    store.close()


def test_fifty_concurrent_decisions_for_one_customer_one_short_of_a_cap(store):
    from concurrent.futures import ThreadPoolExecutor

    assert _decide(store, "hot", T0).offer_id == "a"
    with ThreadPoolExecutor(max_workers=10) as pool:  # a connection per thread, as in the service
        got = list(pool.map(lambda _: _decide(store, "hot", T0 + timedelta(minutes=1)).offer_id, range(50)))
    assert sum(o is not None for o in got) == 1, got
    assert store.count() == 51


def test_a_batch_rerun_replaces_its_decisions(store):
    d = _decide(store, "x", T0)
    table = pd.DataFrame([d.row()], columns=list(DECISION_COLUMNS))
    store.log_table(table)  # the same decision id again: replaced, not added
    store.log_table(table.assign(arm="control", offer_id=None))
    logged = store.decisions()
    assert len(logged) == 1 and logged.loc[0, "arm"] == "control" and logged.loc[0, "offer_id"] is None
    contacts, _ = store.live(0)
    assert contacts.empty  # a control decision is not a contact


def test_a_decision_logged_after_the_deciders_clock_still_counts(store):
    # request X read the clock at T0, request Y at T0 + 1 s but committed first: X must see Y's contact
    assert _decide(store, "skew", T0 + timedelta(seconds=1)).offer_id == "a"
    assert _decide(store, "skew", T0).offer_id == "b"  # a: in cooldown from Y's decision
    assert _decide(store, "skew", T0).offer_id is None  # and the cap of 2 is reached


def test_the_one_customer_path_counts_as_the_vectorised_one():
    from scoring.contacts import live_state_one

    cat = parse_catalog({**catalog().model_dump(mode="json"),
                         "offers": [dict(o, cap={"max_contacts": 2, "window_days": 10})
                                    for o in catalog().model_dump(mode="json")["offers"]]})
    rng = np.random.default_rng(3)
    now = to_us(T0)
    for _ in range(200):
        n, m = int(rng.integers(0, 8)), int(rng.integers(0, 8))
        contacts = [(str(rng.choice(["a", "b", "c", "gone"])), now - int(rng.integers(-DAY_US, 40 * DAY_US)))
                    for _ in range(n)]
        outcomes = [(str(rng.choice(["a", "b"])), str(rng.choice(["reject", "click"])),
                     now - int(rng.integers(-DAY_US, 100 * DAY_US))) for _ in range(m)]
        one = live_state_one(cat, contacts, outcomes, now)
        frame = live_state(["x"], cat, pd.DataFrame({"customer_id": ["x"] * n, "offer_id": [c[0] for c in contacts],
                                                     "decided_us": [c[1] for c in contacts]}),
                           pd.DataFrame({"customer_id": ["x"] * m, "offer_id": [o[0] for o in outcomes],
                                         "type": [o[1] for o in outcomes], "occurred_us": [o[2] for o in outcomes]}),
                           now)
        for field in ("total", "offer_count", "offer_last", "suppressed"):
            assert (getattr(one, field) == getattr(frame, field)).all(), (field, contacts, outcomes)
