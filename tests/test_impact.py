"""scoring.impact: golden numbers on hand-built decision logs (derived by hand in the comments,
the intervals recomputed here from their published formulas with explicit arithmetic), window
and attribution rules, verdicts, and the coverage of the intervals on seeded simulations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scoring.impact import (
    NO_DIFFERENCE,
    NOT_ENOUGH,
    POLICY_BETTER,
    POLICY_WORSE,
    delta_relative,
    katz_relative,
    measure_impact,
    newcombe_difference,
    welch_difference,
    wilson_interval,
)

Z = 1.959963984540054  # the standard normal 0.975 quantile (two-sided 95 %)
T0 = pd.Timestamp("2024-03-01", tz="UTC")
START, END = T0, T0 + pd.Timedelta(days=7)
H = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)


def _decision(decision_id, customer_id, arm, offer_id, policy_offer_id=None, timestamp=T0 + H, released=False):
    if arm != "control" and policy_offer_id is None:
        policy_offer_id = offer_id if arm == "policy" else "A"
    return {"decision_id": decision_id, "customer_id": customer_id, "arm": arm, "offer_id": offer_id,
            "policy_offer_id": policy_offer_id, "timestamp": timestamp, "released": released}


def _outcome(decision_id, kind, timestamp=T0 + 2 * H, value=np.nan):
    return {"decision_id": decision_id, "type": kind, "timestamp": timestamp, "value": value}


def golden_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """30 customers, 10 per arm.

    control C0..C9, one decision each, no offer; the policy would have offered A (C0..C4) or B
    (C5..C9). C0 converts for 50.
    policy P0..P9, 11 decisions: P0 has two (p0a offer A, p0b offer B), P1..P5 offer A, P6..P9
    offer B; every decision has an impression except p9, released (never shown).
      p0a click + convert 10, p0b convert 20 (P0: one converter, value 30)
      p1 accept + convert 40; p2 convert with no value (0); p3 convert 30; p4 reject.
    exploration E0..E9, offers A (even) / B (odd), all shown; E0 converts for 20, E1 clicks.
    """
    d, o = [], []
    for i in range(10):
        d.append(_decision(f"c{i}", f"C{i}", "control", None, "A" if i < 5 else "B"))
    o.append(_outcome("c0", "convert", T0 + DAY, 50.0))
    d += [_decision("p0a", "P0", "policy", "A"), _decision("p0b", "P0", "policy", "B", timestamp=T0 + 1.5 * H)]
    for i in range(1, 10):
        d.append(_decision(f"p{i}", f"P{i}", "policy", "A" if i <= 5 else "B", released=i == 9))
    o += [_outcome(x, "impression") for x in ["p0a", "p0b"] + [f"p{i}" for i in range(1, 9)]]
    o += [_outcome("p0a", "click"), _outcome("p0a", "convert", T0 + DAY, 10.0),
          _outcome("p0b", "convert", T0 + DAY, 20.0),
          _outcome("p1", "accept"), _outcome("p1", "convert", T0 + DAY, 40.0),
          _outcome("p2", "convert", T0 + DAY), _outcome("p3", "convert", T0 + DAY, 30.0),
          _outcome("p4", "reject")]
    for i in range(10):
        d.append(_decision(f"e{i}", f"E{i}", "exploration", "A" if i % 2 == 0 else "B"))
        o.append(_outcome(f"e{i}", "impression"))
    o += [_outcome("e0", "convert", T0 + DAY, 20.0), _outcome("e1", "click")]
    return pd.DataFrame(d), pd.DataFrame(o)


@pytest.fixture(scope="module")
def golden():
    decisions, outcomes = golden_log()
    return measure_impact(decisions, outcomes, start=START, end=END)


# --------------------------------------------------------------------------- hand formulas


def wilson_by_hand(x, n):
    """Wilson limits in Newcombe's (1998) form: (2x + z² ∓ z·sqrt(z² + 4x(1 - x/n))) / (2(n + z²))."""
    root = Z * math.sqrt(Z * Z + 4 * x * (1 - x / n))
    return (2 * x + Z * Z - root) / (2 * (n + Z * Z)), (2 * x + Z * Z + root) / (2 * (n + Z * Z))


# --------------------------------------------------------------------------- per arm, per offer


def test_per_arm_counts_rates_and_value(golden):
    control, exploration, policy = golden.arm("control"), golden.arm("exploration"), golden.arm("policy")
    # control: 10 customers, 10 decisions, nothing shown; 1 of 10 converts, 50 / 10 customers = 5
    assert (control.customers, control.decisions, control.contacts, control.impressions) == (10, 10, 0, 0)
    assert control.response_rate is None
    assert (control.converters, control.conversion_rate, control.value_per_customer) == (1, 0.1, 5.0)
    # policy: 11 decisions of 10 customers; p9 released (not a contact, still counted); 10 impressions;
    # responses p0a (click) and p1 (accept), p4's reject is none: 2 / 10 = 0.2
    assert (policy.customers, policy.decisions, policy.released, policy.contacts) == (10, 11, 1, 10)
    assert (policy.impressions, policy.responses, policy.response_rate) == (10, 2, 0.2)
    # converters P0 (two converting decisions, counted once), P1, P2 (no value), P3: 4 / 10
    assert (policy.converters, policy.conversion_rate) == (4, 0.4)
    # value 10 + 20 + 40 + 0 + 30 = 100 over 10 customers, the 6 without a conversion counting 0
    assert (policy.value, policy.value_per_customer) == (100.0, 10.0)
    # exploration: 10 shown, E1 clicks (0.1), E0 converts for 20: 0.1 and 20 / 10 = 2
    assert (exploration.customers, exploration.impressions, exploration.response_rate) == (10, 10, 0.1)
    assert (exploration.conversion_rate, exploration.value_per_customer) == (0.1, 2.0)


def test_a_customer_with_two_decisions_converts_once(golden):
    # P0 converts on both decisions: one converter of 10 customers, not 2 of 11 decisions
    policy = golden.arm("policy")
    assert policy.decisions == 11 and policy.customers == 10 and policy.converters == 4
    assert policy.conversion_rate == pytest.approx(4 / 10, abs=1e-12)


def test_per_offer_rows_use_the_would_be_offer_in_control(golden):
    assert {o.offer_basis for o in golden.offers if o.arm == "control"} == {"policy_offer_id"}
    assert {o.offer_basis for o in golden.offers if o.arm != "control"} == {"offer_id"}
    a, b = golden.offer("control", "A"), golden.offer("control", "B")
    # control A: C0..C4, C0 converts for 50: 1/5 = 0.2, 50/5 = 10; control B: nothing
    assert (a.customers, a.contacts, a.conversion_rate, a.value_per_customer) == (5, 0, 0.2, 10.0)
    assert (b.customers, b.conversion_rate, b.value_per_customer) == (5, 0.0, 0.0)
    pa, pb = golden.offer("policy", "A"), golden.offer("policy", "B")
    # policy A: p0a, p1..p5 (6 customers, all shown), responses p0a, p1; converters P0, P1, P2, P3;
    # value 10 + 40 + 0 + 30 = 80
    assert (pa.customers, pa.decisions, pa.impressions, pa.responses) == (6, 6, 6, 2)
    assert pa.conversion_rate == pytest.approx(4 / 6) and pa.value_per_customer == pytest.approx(80 / 6)
    # policy B: p0b, p6..p9 (5 customers), p9 released: 4 contacts and impressions, no response;
    # P0 converts (p0b, 20): 1/5, 20/5 = 4
    assert (pb.customers, pb.decisions, pb.released, pb.contacts, pb.impressions) == (5, 5, 1, 4, 4)
    assert (pb.response_rate, pb.conversion_rate, pb.value_per_customer) == (0.0, 0.2, 4.0)
    ea = golden.offer("exploration", "A")
    assert (ea.customers, ea.conversion_rate, ea.value_per_customer) == (5, 0.2, 4.0)


# --------------------------------------------------------------------------- intervals by hand


def test_conversion_lift_newcombe_and_katz_by_hand(golden):
    lift = golden.lift("control", "conversion_rate")
    # rates 0.4 (4/10) and 0.1 (1/10): absolute 0.3, relative 0.4 / 0.1 - 1 = 3.0
    assert lift.absolute.estimate == pytest.approx(0.3, abs=1e-12)
    assert lift.relative.estimate == pytest.approx(3.0, abs=1e-12)
    # Newcombe hybrid score: low = d - sqrt((p1 - l1)² + (u2 - p2)²), high = d + sqrt((u1 - p1)² + (p2 - l2)²)
    l1, u1 = wilson_by_hand(4, 10)  # ≈ (0.16818, 0.68732)
    l2, u2 = wilson_by_hand(1, 10)  # ≈ (0.01787, 0.40415)
    low = 0.3 - math.sqrt((0.4 - l1) ** 2 + (u2 - 0.1) ** 2)
    high = 0.3 + math.sqrt((u1 - 0.4) ** 2 + (0.1 - l2) ** 2)
    assert lift.absolute.low == pytest.approx(low, abs=1e-6)
    assert lift.absolute.high == pytest.approx(high, abs=1e-6)
    assert (round(low, 4), round(high, 4)) == (-0.0824, 0.5988)
    assert "Newcombe" in lift.absolute.method
    # Katz: ln(4) ± z·sqrt(1/4 - 1/10 + 1/1 - 1/10) = ln 4 ± z·sqrt(1.05), then exp(.) - 1
    se = math.sqrt(1 / 4 - 1 / 10 + 1 / 1 - 1 / 10)
    assert lift.relative.low == pytest.approx(math.exp(math.log(4) - Z * se) - 1, abs=1e-6)
    assert lift.relative.high == pytest.approx(math.exp(math.log(4) + Z * se) - 1, abs=1e-6)
    assert "Katz" in lift.relative.method
    # exploration also converts 1 of 10: the same numbers
    other = golden.lift("exploration", "conversion_rate")
    assert (other.absolute.low, other.absolute.high) == pytest.approx((low, high), abs=1e-12)


def test_value_lift_welch_and_delta_by_hand(golden):
    lift = golden.lift("control", "value_per_customer")
    # per customer: policy [30, 40, 0, 30, 0 x 6], mean 10; control [50, 0 x 9], mean 5
    # policy squared deviations 20² + 30² + 10² + 20² + 6 x 10² = 2400, s² = 2400 / 9
    # control 45² + 9 x 5² = 2250, s² = 2250 / 9
    q1, q2 = 2400 / 9 / 10, 2250 / 9 / 10  # s²/n
    se2 = q1 + q2  # 51.667
    df = se2 ** 2 / (q1 ** 2 / 9 + q2 ** 2 / 9)  # Welch-Satterthwaite, ≈ 17.98
    t = stats.t.ppf(0.975, df)
    assert lift.absolute.estimate == pytest.approx(5.0, abs=1e-12)
    assert lift.absolute.low == pytest.approx(5 - t * math.sqrt(se2), abs=1e-6)
    assert lift.absolute.high == pytest.approx(5 + t * math.sqrt(se2), abs=1e-6)
    assert "Welch" in lift.absolute.method
    # delta method: Var ln(m1/m2) = s1²/(n1 m1²) + s2²/(n2 m2²) = (2400/9)/(10·100) + (2250/9)/(10·25)
    var = (2400 / 9) / (10 * 10 ** 2) + (2250 / 9) / (10 * 5 ** 2)
    assert lift.relative.estimate == pytest.approx(1.0, abs=1e-12)  # 10 / 5 - 1
    assert lift.relative.low == pytest.approx(math.exp(math.log(2) - Z * math.sqrt(var)) - 1, abs=1e-6)
    assert lift.relative.high == pytest.approx(math.exp(math.log(2) + Z * math.sqrt(var)) - 1, abs=1e-6)
    assert "delta method" in lift.relative.method
    # over exploration [20, 0 x 9]: mean 2, s² = (18² + 9 x 2²) / 9 = 360 / 9 = 40
    other = golden.lift("exploration", "value_per_customer")
    q2 = 40 / 10
    se2 = q1 + q2
    t = stats.t.ppf(0.975, se2 ** 2 / (q1 ** 2 / 9 + q2 ** 2 / 9))
    assert other.absolute.estimate == pytest.approx(8.0, abs=1e-12)
    assert (other.absolute.low, other.absolute.high) == pytest.approx(
        (8 - t * math.sqrt(se2), 8 + t * math.sqrt(se2)), abs=1e-6)


def test_newcombe_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    iv = newcombe_difference(56, 70, 48, 80)
    assert iv.estimate == pytest.approx(0.2, abs=1e-12)
    assert (round(iv.low, 4), round(iv.high, 4)) == (0.0524, 0.3339)
    # Wilson for 0 of 10 (Newcombe's example (e) of single proportions): 0 to 0.2775
    w = wilson_interval(0, 10)
    assert w.low == 0.0 and round(w.high, 4) == 0.2775


def test_undefined_intervals_say_why():
    assert katz_relative(3, 10, 0, 10).estimate is None  # reference rate 0
    assert katz_relative(0, 10, 2, 10).estimate == pytest.approx(-1.0) and katz_relative(0, 10, 2, 10).low is None
    assert welch_difference([0.0] * 5, [0.0] * 5).low is None  # no variation
    assert delta_relative([1.0, 2.0], [0.0, 0.0]).estimate is None
    assert newcombe_difference(0, 0, 1, 5).note
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


# --------------------------------------------------------------------------- window and attribution


def test_window_and_attribution_horizon():
    d = pd.DataFrame([
        _decision("at_start", "A1", "policy", "A", timestamp=START),  # start <= t: in
        _decision("mid", "A2", "policy", "A", timestamp=START + DAY),
        _decision("at_end", "A3", "policy", "A", timestamp=END),  # t < end fails: out
        _decision("before", "A4", "policy", "A", timestamp=START - pd.Timedelta(seconds=1)),  # out
    ])
    o = pd.DataFrame([
        # after end but 20 days after its decision (< 28): counts
        _outcome("at_start", "convert", START + 20 * DAY, 7.0),
        _outcome("mid", "impression", START + DAY + H),
        _outcome("mid", "convert", START + DAY - H, 100.0),  # before its decision: ignored
        _outcome("mid", "convert", START + DAY + 28 * DAY, 100.0),  # 28 days on, horizon is [0, 28): ignored
        _outcome("at_end", "convert", END + H, 100.0),  # decision outside the window
        _outcome("ghost", "convert", START + H, 100.0),  # no such decision
        _outcome("mid", "open", START + DAY + H),  # unknown type
    ])
    r = measure_impact(d, o, start=START, end=END)
    policy = r.arm("policy")
    assert (policy.customers, policy.decisions, policy.impressions) == (2, 2, 1)
    assert (policy.converters, policy.conversion_rate, policy.value_per_customer) == (1, 0.5, 3.5)
    q = r.quality
    assert (q.decisions_in_window, q.decisions_outside_window, q.outcomes_counted) == (2, 2, 2)
    assert (q.outcome_before_decision, q.outcome_beyond_horizon) == (1, 1)
    assert (q.outcome_of_decision_outside_window, q.outcome_of_unknown_decision, q.unknown_type) == (1, 1, 1)
    assert r.attribution_complete_at == END + 28 * DAY
    # a shorter horizon drops the late conversion
    short = measure_impact(d, o, start=START, end=END, horizon_days=14)
    assert short.arm("policy").converters == 0 and short.quality.outcome_beyond_horizon == 2


def test_intention_to_treat_nothing_eligible_and_a_customer_in_two_arms():
    d = pd.DataFrame([
        _decision("r", "R", "policy", "A", released=True),  # released, yet the customer converted
        _decision("n", "N", "policy", None, policy_offer_id=None),  # nothing eligible
        _decision("s1", "S", "control", None, "A"),  # S moved arm between two assignment periods
        _decision("s2", "S", "policy", "B", timestamp=T0 + 2 * DAY),
    ])
    o = pd.DataFrame([_outcome("r", "convert", T0 + DAY, 5.0), _outcome("s2", "convert", T0 + 3 * DAY, 8.0)])
    r = measure_impact(d, o, start=START, end=END)
    policy = r.arm("policy")
    # customers R, N, S; 3 decisions, 1 released; contacts: s2 only (r released, n had no offer)
    assert (policy.customers, policy.decisions, policy.released, policy.contacts) == (3, 3, 1, 1)
    # R's conversion counts (intention to treat): converters R and S, 2 / 3; value (5 + 8) / 3
    assert (policy.converters, policy.value) == (2, 13.0)
    assert r.offer("policy", None).customers == 1 and r.offers[-1].offer_id is None  # no offer sorts last
    # S counts once in each arm, with that arm's decisions only: control S did not convert
    assert (r.arm("control").customers, r.arm("control").converters) == (1, 0)
    assert r.quality.customers_in_several_arms == 1


def test_numeric_identifiers_are_read_as_strings():
    d = pd.DataFrame([_decision(7, 70, "policy", 1)])
    o = pd.DataFrame([_outcome(7, "convert", T0 + DAY, 3.0)])
    r = measure_impact(d, o, start=START, end=END)
    assert r.arm("policy").converters == 1 and r.offers[0].offer_id == "1"


def test_naive_timestamps_are_utc():
    d = pd.DataFrame([_decision("x", "X", "policy", "A", timestamp=pd.Timestamp("2024-03-01 01:00"))])
    o = pd.DataFrame([_outcome("x", "convert", pd.Timestamp("2024-03-02"), 1.0)])
    r = measure_impact(d, o, start="2024-03-01", end="2024-03-08")
    assert r.arm("policy").converters == 1 and r.start == START


def test_bad_input_is_refused():
    d, o = golden_log()
    with pytest.raises(ValueError, match="unknown arms"):
        measure_impact(d.assign(arm="treatment"), o, start=START, end=END)
    with pytest.raises(ValueError, match="duplicate"):
        measure_impact(pd.concat([d, d.head(1)]), o, start=START, end=END)
    with pytest.raises(ValueError, match="lacks columns"):
        measure_impact(d.drop(columns="released"), o, start=START, end=END)
    with pytest.raises(ValueError, match="before end"):
        measure_impact(d, o, start=END, end=START)


# --------------------------------------------------------------------------- verdicts


def test_a_tiny_log_is_not_enough_to_call(golden):
    assert {x.verdict for x in golden.lifts} == {NOT_ENOUGH}
    assert "fewer than min_customers=100" in golden.lift("control", "conversion_rate").reason
    # with the size gate lowered, the width still says no: [-0.08, 0.60] is far wider than 0.05
    d, o = golden_log()
    r = measure_impact(d, o, start=START, end=END, min_customers=5)
    lift = r.lift("control", "conversion_rate")
    assert lift.verdict == NOT_ENOUGH and "max_ci_width=0.05" in lift.reason


def test_a_wide_interval_that_excludes_zero_is_not_a_call():
    # 20 of 20 policy customers convert, 0 of 20 control: the interval excludes 0 but is ~0.3 wide
    d = pd.DataFrame([_decision(f"p{i}", f"P{i}", "policy", "A") for i in range(20)]
                     + [_decision(f"c{i}", f"C{i}", "control", None, "A") for i in range(20)])
    o = pd.DataFrame([_outcome(f"p{i}", "convert", T0 + DAY, 1.0) for i in range(20)])
    lift = measure_impact(d, o, start=START, end=END, min_customers=10).lift("control", "conversion_rate")
    assert lift.absolute.low > 0 and lift.verdict == NOT_ENOUGH and "excludes 0" in lift.reason


def _population(arm, n, converters, value=10.0, offer="A"):
    """n customers of an arm, one decision each, the first ``converters`` convert for ``value``."""
    d = [_decision(f"{arm}{i}", f"{arm}-{i}", arm, None if arm == "control" else offer, offer) for i in range(n)]
    o = [_outcome(f"{arm}{i}", "convert", T0 + DAY, value) for i in range(converters)]
    return d, o


def _log(*populations):
    return (pd.DataFrame([r for d, _ in populations for r in d]), pd.DataFrame([r for _, o in populations for r in o]))


def test_a_large_clearly_separated_log_says_policy_better():
    # 6000 customers per arm: control 5 %, exploration 10 %, policy 20 %, each conversion worth 10
    d, o = _log(_population("control", 6000, 300), _population("exploration", 6000, 600),
                _population("policy", 6000, 1200))
    r = measure_impact(d, o, start=START, end=END, expected_shares={"control": 1, "exploration": 1, "policy": 1})
    for reference in ("control", "exploration"):
        for metric in ("conversion_rate", "value_per_customer"):
            assert r.lift(reference, metric).verdict == POLICY_BETTER, r.lift(reference, metric).reason
    assert r.lift("control", "conversion_rate").absolute.estimate == pytest.approx(0.15)
    assert r.lift("control", "conversion_rate").relative.estimate == pytest.approx(3.0)
    assert r.sample_ratio is not None and not r.sample_ratio.mismatch


def test_worse_and_no_difference():
    d, o = _log(_population("control", 6000, 1200), _population("exploration", 6000, 600),
                _population("policy", 6000, 600))
    r = measure_impact(d, o, start=START, end=END)
    assert r.lift("control", "conversion_rate").verdict == POLICY_WORSE
    assert r.lift("control", "value_per_customer").verdict == POLICY_WORSE
    assert r.lift("exploration", "conversion_rate").verdict == NO_DIFFERENCE
    assert r.lift("exploration", "value_per_customer").verdict == NO_DIFFERENCE


def test_sample_ratio_mismatch_is_flagged():
    d, o = _log(_population("control", 300, 10), _population("policy", 3000, 100))
    r = measure_impact(d, o, start=START, end=END, expected_shares={"control": 0.05, "policy": 0.95})
    # expected 165 control customers of 3300, observed 300: chi-square far in the tail
    assert r.sample_ratio.mismatch and r.sample_ratio.p_value < 1e-6


# --------------------------------------------------------------------------- output


def test_to_dict_is_json_without_nan_and_table_prints(golden):
    payload = golden.to_dict()
    text = json.dumps(payload, allow_nan=False)
    assert "NaN" not in text
    assert payload["arms"][0]["response_rate"] is None  # control has no impressions
    assert payload["lifts"][0]["absolute"]["method"].startswith("Newcombe")
    assert payload["end"] == END.isoformat()
    assert any("policy_offer_id" in n for n in payload["notes"])
    lifts = golden.table()
    assert list(lifts[["reference", "metric"]].itertuples(index=False, name=None)) == [
        ("control", "conversion_rate"), ("control", "value_per_customer"),
        ("exploration", "conversion_rate"), ("exploration", "value_per_customer")]
    assert len(golden.table("arms")) == 3 and len(golden.table("offers")) == len(golden.offers)


def test_empty_window_gives_an_empty_report():
    d, o = golden_log()
    r = measure_impact(d, o, start=END, end=END + DAY)
    assert all(a.customers == 0 for a in r.arms) and r.offers == ()
    assert {x.verdict for x in r.lifts} == {NOT_ENOUGH}
    json.dumps(r.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- coverage


def test_intervals_cover_the_true_difference_on_seeded_simulations():
    """200 seeded replications, 2000 customers per arm: conversion 8 % vs 11 %, value of a
    conversion lognormal(3, 1) (mean e^3.5). Each 95 % interval must cover the truth in >= 90 %."""
    rng = np.random.default_rng(20240301)
    n, p_ref, p_test, mu, sigma = 2000, 0.08, 0.11, 3.0, 1.0
    mean = math.exp(mu + sigma ** 2 / 2)
    truth = {"newcombe": p_test - p_ref, "katz": p_test / p_ref - 1,
             "welch": (p_test - p_ref) * mean, "delta": p_test / p_ref - 1}
    hits = dict.fromkeys(truth, 0)
    reps = 200
    for _ in range(reps):
        conv_t, conv_r = rng.random(n) < p_test, rng.random(n) < p_ref
        val_t = np.where(conv_t, rng.lognormal(mu, sigma, n), 0.0)
        val_r = np.where(conv_r, rng.lognormal(mu, sigma, n), 0.0)
        x_t, x_r = int(conv_t.sum()), int(conv_r.sum())
        hits["newcombe"] += newcombe_difference(x_t, n, x_r, n).contains(truth["newcombe"])
        hits["katz"] += katz_relative(x_t, n, x_r, n).contains(truth["katz"])
        hits["welch"] += welch_difference(val_t, val_r).contains(truth["welch"])
        hits["delta"] += delta_relative(val_t, val_r).contains(truth["delta"])
    coverage = {k: v / reps for k, v in hits.items()}
    assert all(c >= 0.90 for c in coverage.values()), coverage


def test_the_report_uses_the_same_intervals_on_a_simulated_log():
    # one simulated log through measure_impact equals the interval functions on its customers
    rng = np.random.default_rng(7)
    n = 1500
    conv = {"control": rng.random(n) < 0.08, "policy": rng.random(n) < 0.11}
    value = {a: np.where(c, rng.lognormal(3.0, 1.0, n), np.nan) for a, c in conv.items()}
    d = pd.DataFrame([_decision(f"{a}{i}", f"{a}-{i}", a, None if a == "control" else "A", "A")
                      for a in conv for i in range(n)])
    o = pd.DataFrame([_outcome(f"{a}{i}", "convert", T0 + DAY, value[a][i])
                      for a in conv for i in np.flatnonzero(conv[a])])
    r = measure_impact(d, o, start=START, end=END)
    expect = newcombe_difference(int(conv["policy"].sum()), n, int(conv["control"].sum()), n)
    got = r.lift("control", "conversion_rate").absolute
    assert (got.low, got.high) == pytest.approx((expect.low, expect.high), abs=1e-12)
    expect = welch_difference(np.nan_to_num(value["policy"]), np.nan_to_num(value["control"]))
    got = r.lift("control", "value_per_customer").absolute
    assert (got.low, got.high) == pytest.approx((expect.low, expect.high), abs=1e-9)
