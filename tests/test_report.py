"""The CVM report: each metric against a hand-computed value, and the page itself (same
numbers as the batch output, self-contained, renders in headless Chromium without errors)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from datetime import date

import numpy as np
import pandas as pd
import pytest

from batch.score import segment_migration
from report import metrics

AS_OF = date(2024, 7, 1)


def daily_table() -> pd.DataFrame:
    """a: May and June; b: May only (churns); c: June only (new); d: January only; e: May and June."""
    rows = [("a", "2024-05-10", 10.0), ("a", "2024-06-10", 20.0), ("b", "2024-05-15", 30.0),
            ("c", "2024-06-20", 50.0), ("c", "2024-06-25", 5.0), ("d", "2024-01-05", 100.0),
            ("e", "2024-05-20", 8.0), ("e", "2024-06-30", 12.0)]
    return pd.DataFrame({"customer_id": [r[0] for r in rows], "day": pd.to_datetime([r[1] for r in rows]),
                         "revenue": [r[2] for r in rows], "orders": 1})


def scores_table() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list("abcde"), "rfm_segment": ["loyal", "at_risk", "new", "lost", "loyal"],
                         "clv": [40.0, 5.0, 70.0, np.nan, 25.0]})


def test_kpis_by_hand():
    """Last 30 days [06-01, 07-01): a 20, c 55, e 12. Previous [05-02, 06-01): a, b, e; b
    did not come back: churn 1/3. ARPU 87 / 3. Top 20 % of 3 buyers = 1 buyer (c, 55)."""
    k = metrics.kpis(daily_table(), scores_table(), AS_OF, period_days=30)
    assert k.active_customers == 3
    assert k.churn_rate == pytest.approx(1 / 3) and k.retention_rate == pytest.approx(2 / 3)
    assert k.revenue == pytest.approx(87.0) and k.arpu == pytest.approx(29.0)
    assert k.top20_revenue_share == pytest.approx(55 / 87)
    assert k.clv_mean == pytest.approx(35.0) and k.clv_median == pytest.approx(32.5)


def test_metrics_refuse_data_from_as_of_or_later():
    late = pd.concat([daily_table(), pd.DataFrame({"customer_id": ["a"], "day": pd.to_datetime(["2024-07-01"]),
                                                   "revenue": [1.0], "orders": [1]})])
    with pytest.raises(ValueError, match="on or after as_of"):
        metrics.kpis(late, scores_table(), AS_OF)


def test_cohort_cells_by_hand():
    """Cohort 2024-05 = a, b, e: all ordered in May, a and e in June -> 1.0, 2/3; its June
    revenue 20 + 12. Cohort 2024-01 (d) reached months 1..5 with no order -> 0. Cohort
    2024-06 (c) has not reached month 1 (July is not complete) -> empty."""
    retention, revenue, size = metrics.cohorts(daily_table(), AS_OF)
    assert size["2024-05"] == 3 and size["2024-01"] == 1 and size["2024-06"] == 1
    assert retention.loc["2024-05", 0] == 1.0 and retention.loc["2024-05", 1] == pytest.approx(2 / 3)
    assert revenue.loc["2024-05", 1] == pytest.approx(32.0)
    assert retention.loc["2024-01", 5] == 0.0 and revenue.loc["2024-01", 5] == 0.0
    assert pd.isna(retention.loc["2024-06", 1])


def test_segments_and_migration_cell_by_hand():
    seg = metrics.segments(scores_table(), daily_table(), AS_OF, period_days=30)
    assert seg.loc["loyal", "customers"] == 2
    assert seg.loc["loyal", "revenue_share"] == pytest.approx((20 + 12) / 87)
    assert seg.loc["loyal", "clv_mean"] == pytest.approx(32.5)
    before = pd.DataFrame({"customer_id": list("abcx"), "rfm_segment": ["new", "loyal", "new", "loyal"]})
    now = scores_table()
    m = metrics.migration_matrix(segment_migration(before, now))
    assert m.loc["new", "loyal"] == 1 and m.loc["new", "new"] == 1  # a: new -> loyal; c stays new
    assert m.loc["loyal", "at_risk"] == 1 and m.loc["loyal", "(none)"] == 1  # b moved, x is gone
    assert m.loc["(none)", "loyal"] == 1 and m.loc["(none)", "lost"] == 1  # e and d are new to the base
    assert int(m.to_numpy().sum()) == 6


def test_pareto_and_top_share():
    x, y = metrics.pareto(np.array([50.0, 30.0, 10.0, 10.0, 0.0]))
    assert x.tolist() == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert y.tolist() == pytest.approx([0, 0.5, 0.8, 0.9, 1.0, 1.0])
    assert metrics.top_share(np.array([50.0, 30.0, 10.0, 10.0, 0.0]), 0.2) == pytest.approx(0.5)


def test_campaign_effect_by_hand():
    """w, x, y, z bought on 04-01 (the base); K contacted w and x on 04-10. Spend in the 4
    weeks after: w 10, x 20 | y 0, z 6 -> 15 vs 3, difference 12, Welch se sqrt(50/2 + 18/2)."""
    daily = pd.DataFrame({"customer_id": ["w", "x", "y", "z", "w", "x", "z", "q"],
                          "day": pd.to_datetime(["2024-04-01"] * 4 + ["2024-04-15", "2024-05-01", "2024-05-07",
                                                                      "2024-04-20"]),
                          "revenue": [1, 1, 1, 1, 10, 20, 6, 99.0], "orders": 1})
    contacts = pd.DataFrame({"customer_id": ["w", "x", "q"], "campaign_id": ["K", "K", "K"],
                             "timestamp": pd.to_datetime(["2024-04-10 09:00", "2024-04-10 12:00", "2024-04-10 00:00"])})
    eff = metrics.campaign_effect(daily, contacts, date(2024, 6, 1), weeks=4)
    row = eff.iloc[0]
    assert (row.contacted, row.not_contacted) == (2, 2)  # q is outside the base (no order before)
    assert row.spend_contacted == pytest.approx(15) and row.spend_not_contacted == pytest.approx(3)
    assert row.difference == pytest.approx(12)
    assert row.ci_high - row.difference == pytest.approx(1.96 * math.sqrt(34))
    # a campaign whose 4 weeks are not over by as_of is left out
    early = daily[daily["day"] < pd.Timestamp("2024-05-01")]
    assert metrics.campaign_effect(early, contacts, date(2024, 5, 1), weeks=4).empty


# ------------------------------------------------------------------------------ measured impact
IMPACT_AS_OF = date(2026, 3, 31)  # the 90-day period: decisions of [2025-12-31, 2026-03-31)


def _impact_log(home, *, n: int = 120, control_converters: int = 12, policy_converters: int = 36,
                exploration: int = 20) -> None:
    """A hand-built log for dataset "shop": ``n`` control customers (no offer, would have got A),
    ``n`` policy customers offered A (all shown, half clicked) and ``exploration`` customers
    offered B, one decision each on 2026-03-20; converts worth 10 each. Left out: a control
    decision before the period, one on as_of itself, and a policy conversion on 2026-04-02
    (within the horizon but after the report's date)."""
    from datetime import datetime

    from scoring.decisions import Decision, Outcome, SQLiteDecisionStore, to_us

    day = to_us(datetime(2026, 3, 20, 9))
    def decision(cid, arm, when=day):
        return Decision(customer_id=cid, decided_us=when, arm=arm, offer_id={"control": None, "policy": "A"}.get(arm, "B"),
                        channel=None if arm == "control" else "email",
                        pscore={"control": 0.05, "exploration": 0.05}.get(arm, 0.9), policy_offer_id="A",
                        source="test")

    control = [decision(f"c{i}", "control") for i in range(n)]
    policy = [decision(f"p{i}", "policy") for i in range(n)]
    explore = [decision(f"e{i}", "exploration") for i in range(exploration)]
    outside = [decision("old", "control", to_us(datetime(2025, 12, 30, 23))),
               decision("late", "control", to_us(datetime(2026, 3, 31)))]
    at = datetime(2026, 3, 22, 12)

    def outcome(d, kind, when=at, value=None):
        return Outcome(outcome_id=f"{kind}-{d.decision_id}", decision_id=d.decision_id, type=kind, timestamp=when,
                       value=value)

    events = [outcome(d, "convert", value=10.0) for d in control[:control_converters] + policy[:policy_converters]
              + explore[:2] + outside]
    events += [outcome(d, "impression") for d in policy + explore]
    events += [outcome(d, "click") for d in policy[: n // 2]]
    events += [outcome(policy[-1], "convert", datetime(2026, 4, 2), 10.0)]
    store = SQLiteDecisionStore(home.decisions("shop") / "decisions.sqlite")
    try:
        store.log(control + policy + explore + outside)
        store.record_outcomes(events)
    finally:
        store.close()


def _impact_section(home, as_of: date = IMPACT_AS_OF) -> tuple[object, str]:
    import plotly.graph_objects as go

    from report.html import _Figures
    from report.impact import load_impact, section_html

    measured = load_impact(home, "shop", as_of, period_days=90, decisions_url="")
    return measured, section_html(measured, _Figures().div, go)


def _cell(text: str, row: str, column: int) -> str:
    """The ``data-value`` of a table row's ``column``-th number cell."""
    tr = re.search(rf"<tr {row}[^>]*>(.*?)</tr>", text).group(1)
    return re.findall(r'<td data-value="([^"]*)"', tr)[column]


def test_impact_section_per_arm_numbers_and_lifts_by_hand(home, monkeypatch):
    """Control: 120 customers, 12 convert -> 10.0 %, value 120 / 120 = 1.00 per customer; policy:
    120, 36 -> 30.0 %, 3.00; lift +20.0 points, +200 %. The Newcombe interval excludes 0 but is
    about 20 points wide, wider than the 5 points asked: not enough data to call. Exploration
    (20 customers) is below min_customers: not enough data to call either."""
    from scoring.impact import NOT_ENOUGH, katz_relative, newcombe_difference

    monkeypatch.delenv("CVM_DECISIONS_URL", raising=False)
    _impact_log(home)
    measured, text = _impact_section(home)
    assert measured.status == "measured" and measured.decisions == 260 and measured.outcomes_after_end == 1
    assert '<h2>Measured impact</h2>' in text and 'data-randomised="true"' in text
    names = ("customers", "decisions", "impressions", "response_rate", "converters", "conversion_rate",
             "value_per_customer")
    columns = {name: i for i, name in enumerate(names)}
    control = {k: float(_cell(text, 'data-arm="control"', c) or "nan") for k, c in columns.items()}
    policy = {k: float(_cell(text, 'data-arm="policy"', c) or "nan") for k, c in columns.items()}
    assert (control["customers"], control["decisions"], control["converters"]) == (120, 120, 12)
    assert (policy["customers"], policy["decisions"], policy["converters"], policy["impressions"]) == (120, 120, 36, 120)
    assert control["conversion_rate"] == pytest.approx(0.1) and policy["conversion_rate"] == pytest.approx(0.3)
    assert control["value_per_customer"] == pytest.approx(1.0) and policy["value_per_customer"] == pytest.approx(3.0)
    assert policy["response_rate"] == pytest.approx(0.5) and math.isnan(control["response_rate"])
    assert "10.0%" in text and "30.0%" in text and "+20.0 points" in text
    expected = newcombe_difference(36, 120, 12, 120)
    row = re.search(r'<tr data-lift="conversion_rate:policy_vs_control"[^>]*>', text).group(0)
    assert f'data-low="{expected.low!r}"' in row and f'data-high="{expected.high!r}"' in row
    assert f"+20.0 points (95 % CI {100 * expected.low:+.1f} to {100 * expected.high:+.1f} points)" in text
    relative = katz_relative(36, 120, 12, 120)
    assert f"+200.0% (95 % CI {relative.low:+.1%} to {relative.high:+.1%})" in text
    assert f'data-verdict="{NOT_ENOUGH}"' in row and "wider than max_ci_width" in text
    row = re.search(r'<tr data-lift="conversion_rate:policy_vs_exploration"[^>]*>.*?</tr>', text).group(0)
    assert NOT_ENOUGH in row and "exploration has 20 customers" in row
    assert "Newcombe" in text and "Katz" in text and "Welch" in text  # the methods are named
    # the forest plots: conversion rate and value per customer; the per-offer table keys control by its would-be offer
    assert text.count('class="plotly-graph-div"') == 2 and "0 = no effect" in text
    assert _cell(text, 'data-offer="A" data-arm="control"', 4) == "12.0"
    assert _cell(text, 'data-offer="B" data-arm="exploration"', 4) == "2.0"


def test_impact_section_calls_a_clear_win(home, monkeypatch):
    """2,000 customers per arm, 10 % vs 30 %: the interval (about 4.8 points wide) lies above 0."""
    from scoring.impact import POLICY_BETTER

    monkeypatch.delenv("CVM_DECISIONS_URL", raising=False)
    _impact_log(home, n=2000, control_converters=200, policy_converters=600)
    measured, text = _impact_section(home)
    assert measured.report.lift("control", "conversion_rate").verdict == POLICY_BETTER
    row = re.search(r'<tr data-lift="conversion_rate:policy_vs_control"[^>]*>.*?</tr>', text).group(0)
    assert f'data-verdict="{POLICY_BETTER}"' in row and "+20.0 points" in row


def test_impact_section_without_a_log_says_so_and_creates_nothing(home, monkeypatch):
    monkeypatch.delenv("CVM_DECISIONS_URL", raising=False)
    measured, text = _impact_section(home)
    assert measured.status == "no_log" and measured.report is None
    assert "No randomised decisions in this period" in text and "no decision has been logged" in text
    assert "will appear here" in text
    assert "<table" not in text and "%" not in text and "plotly" not in text  # words, no numbers
    assert not home.decisions("shop").exists()  # the log was not created
    # a log with decisions but no control group is not a comparison either
    from scoring.decisions import Decision, SQLiteDecisionStore, to_us

    store = SQLiteDecisionStore(home.decisions("shop") / "decisions.sqlite")
    store.log([Decision("x", to_us(pd.Timestamp("2026-03-01").to_pydatetime()), "policy", "A", "email", 0.9, "A")])
    store.close()
    measured, text = _impact_section(home)
    assert measured.status == "not_randomised" and measured.decisions == 1
    assert "No randomised decisions in this period" in text and "only in the policy arm" in text
    # a control group and the policy, but no outcome reported: nothing to measure, not a zero lift
    store = SQLiteDecisionStore(home.decisions("shop") / "decisions.sqlite")
    store.log([Decision("y", to_us(pd.Timestamp("2026-03-02").to_pydatetime()), "control", None, None, 0.05, "A")])
    store.close()
    measured, text = _impact_section(home)
    assert measured.status == "no_outcomes" and measured.decisions == 2
    assert "no outcome" in text and "<table" not in text and "plotly" not in text
    # and a log whose decisions are all after the period (the batch of as_of decides at 00:00 of as_of)
    measured, text = _impact_section(home, date(2026, 3, 1))
    assert measured.status == "not_randomised" and "no decision made in this period" in text


# ------------------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def page(served_home, tmp_path_factory):
    """`cvm report` on the served synthetic home (the batch runs first: no output yet)."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from typer.testing import CliRunner

    from cvm.cli import app
    from tests.serving_fixtures import AS_OF as SERVED_AS_OF

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    root = tmp_path_factory.mktemp("report")
    out, batch = root / "report.html", root / "batch"
    try:
        r = CliRunner().invoke(app, ["report", "--dataset", str(served_home.dataset), "--as-of", SERVED_AS_OF,
                                     "--home", str(served_home.home), "--batch-dir", str(batch), "--out", str(out)],
                               catch_exceptions=False)
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
    assert r.exit_code == 0, r.output
    return out, batch / f"as_of={SERVED_AS_OF}"


def _kpi(text: str, key: str) -> float:
    return float(re.search(rf'data-kpi="{key}" data-value="([^"]+)"', text).group(1))


def test_page_numbers_equal_the_batch_output(page):
    out, batch = page
    text = out.read_text()
    scores = pd.read_parquet(batch / "scores.parquet")
    assert _kpi(text, "clv_mean") == pytest.approx(scores["clv"].mean(), rel=1e-12)
    assert _kpi(text, "clv_median") == pytest.approx(scores["clv"].median(), rel=1e-12)
    for section in ("kpis", "cohorts", "segments", "clv", "models", "nbo", "campaigns"):
        assert f'<section id="{section}">' in text, section
    # the served home's only logged decisions are its batch's, made at 00:00 of as_of: after the period
    assert '<section id="impact" class="impact" data-randomised="false"' in text
    assert "<h2>7. Measured impact</h2>" in text and "No randomised decisions in this period" in text
    for task in ("churn", "next-purchase", "cross-sell", "clv"):
        assert f'id="card-{task}"' in text, task
    assert "Observational, not causal" in text
    # champions trained by this version log their test predictions: calibration and gains are drawn
    assert "did not log its test predictions" not in text
    assert text.count("Cumulative gains") == 4 and text.count("Calibration") == 3  # clv has no probability


def test_page_is_self_contained(page):
    text = page[0].read_text()
    assert not re.search(r"<script[^>]+src=", text, re.IGNORECASE), "a script loaded from elsewhere"
    assert not re.search(r"<link[^>]+href=[\"']?https?:", text, re.IGNORECASE), "a stylesheet loaded from elsewhere"
    assert not re.search(r"@import\s+url\(", text, re.IGNORECASE)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is needed to check the report page: apt-get install chromium (.ci/run does)")


def test_page_renders_in_headless_chromium(page, tmp_path):
    from PIL import Image

    browser = _chromium()
    out = page[0]
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--virtual-time-budget=20000", "--window-size=1280,2400"]
    dom = subprocess.run([*common, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=180, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    root = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert "data-js-errors" not in root, f"JavaScript errors on the page: {root}"
    plots = int(re.search(r'data-plots="(\d+)"', root).group(1))
    assert plots == page[0].read_text().count('class="plotly-graph-div"') and plots >= 10
    shot = tmp_path / "report.png"
    r = subprocess.run([*common, f"--screenshot={shot}", out.as_uri()], capture_output=True, text=True,
                       timeout=180, check=False)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype="float64")
    assert pixels.std() > 10, "the screenshot is blank"
