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
