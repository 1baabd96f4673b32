"""Baselines on tiny hand-made snapshots: direction, the window last_period picks, popularity's origin."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.definitions import slug
from training.baselines import baselines, historical_rate, last_period, rfm_score
from training.bgnbd import BGNBD

H = 30

# customer_id, purchase_days, recency_days, tenure_days, avg_order_value, r, f, m, orders_total
CUSTOMERS = [
    ("c01", 1, 300, 300, 20.0, 1, 1, 1, 1),
    ("c02", 1, 40, 40, 35.0, 4, 1, 2, 1),
    ("c03", 2, 100, 250, 18.0, 2, 2, 1, 2),
    ("c04", 3, 10, 200, 22.0, 5, 3, 3, 4),
    ("c05", 5, 5, 360, 30.0, 5, 4, 4, 6),
    ("c06", 8, 2, 365, 28.0, 5, 5, 5, 9),
    ("c07", 4, 280, 350, 50.0, 1, 3, 4, 4),
    ("c08", 5, 300, 360, 15.0, 1, 4, 2, 5),
    ("c09", 6, 30, 300, 40.0, 3, 4, 5, 7),
    ("c10", 1, 120, 120, 25.0, 2, 1, 2, 2),
    ("c11", 3, 60, 180, 33.0, 3, 3, 3, 3),
    ("c12", 10, 1, 365, 26.0, 5, 5, 4, 12),
    ("c13", 6, 250, 330, 19.0, 1, 4, 3, 6),
    ("c14", 4, 200, 260, 45.0, 2, 3, 5, 4),
]


def snapshot() -> pd.DataFrame:
    f = pd.DataFrame(CUSTOMERS, columns=["customer_id", "purchase_days", "recency_days", "tenure_days",
                                         "avg_order_value", "r_score", "f_score", "m_score", "orders_total"])
    f["spend_total"] = f["avg_order_value"] * f["orders_total"]
    f["as_of"] = date(2024, 3, 1)
    return f


# ---------------------------------------------------------------------------- churn / next-purchase
def test_churn_scores_point_towards_churners():
    test = snapshot()
    out = baselines("churn", test.iloc[:0], test, H)
    assert set(out.scores) == {"recency", "rfm_score", "bgnbd"} and out.values == {}
    # more days since the last order -> higher churn score
    np.testing.assert_array_equal(out.scores["recency"], test["recency_days"].to_numpy(dtype=float))
    assert out.scores["recency"][0] > out.scores["recency"][5]  # 300 days silent vs 2 days
    # better RFM customer -> lower churn score
    np.testing.assert_array_equal(out.scores["rfm_score"], -(test["r_score"] + test["f_score"] + test["m_score"]))
    assert out.scores["rfm_score"][5] < out.scores["rfm_score"][0]
    # bgnbd: 1 - P(buy in H) from a model fitted on the test snapshot itself
    expected = BGNBD(spend=False).fit(test).transform(test, H)["bgnbd_p_purchase"].to_numpy()
    np.testing.assert_allclose(out.scores["bgnbd"], 1.0 - expected)
    assert ((out.scores["bgnbd"] >= 0) & (out.scores["bgnbd"] <= 1)).all()
    # c08 (5 purchase days, silent 300 days) is likelier to churn than c06 (8, last order 2 days ago)
    assert out.scores["bgnbd"][7] > out.scores["bgnbd"][5]


def test_next_purchase_is_the_mirror_of_churn_with_values():
    test = snapshot()
    churn = baselines("churn", test.iloc[:0], test, H)
    nxt = baselines("next-purchase", test.iloc[:0], test, H)
    # fewer days since the last order -> higher next-purchase score
    np.testing.assert_array_equal(nxt.scores["recency"], -test["recency_days"].to_numpy(dtype=float))
    assert nxt.scores["recency"][5] > nxt.scores["recency"][0]
    np.testing.assert_array_equal(nxt.scores["rfm_score"], -churn.scores["rfm_score"])
    np.testing.assert_allclose(nxt.scores["bgnbd"], 1.0 - churn.scores["bgnbd"])
    assert set(nxt.values) == {"bgnbd", "historical_rate"}
    bg = BGNBD(spend=False).fit(test).transform(test, H)
    np.testing.assert_allclose(nxt.values["bgnbd"], bg["bgnbd_expected_purchases"])
    # c12: 12 orders over 365 + 1 days -> 12 / 366 * 30
    assert nxt.values["historical_rate"][11] == pytest.approx(12 / 366 * 30)


def test_baselines_never_read_test_labels():
    test = snapshot()
    a = baselines("next-purchase", test.iloc[:0], test.assign(label=1), H)
    b = baselines("next-purchase", test.iloc[:0], test.assign(label=np.arange(len(test)) % 2), H)
    for key in a.scores:
        np.testing.assert_array_equal(a.scores[key], b.scores[key])


def test_rfm_score_and_historical_rate_golden():
    f = pd.DataFrame({"r_score": [5, 1], "f_score": [4, 1], "m_score": [3, 2],
                      "orders_total": [10, 0], "tenure_days": [99, 9]})
    np.testing.assert_array_equal(rfm_score(f), [12.0, 4.0])
    np.testing.assert_allclose(historical_rate(f, "orders_total", 30), [3.0, 0.0])


# ---------------------------------------------------------------------------- clv
def clv_snapshot() -> pd.DataFrame:
    f = snapshot()
    f["spend_30d"] = np.linspace(0.0, 130.0, len(f))
    f["spend_90d"] = np.linspace(90.0, 480.0, len(f))
    f["spend_365d"] = np.linspace(365.0, 3650.0, len(f))
    return f


@pytest.mark.parametrize(("horizon", "window"), [
    (30, 30),    # exact
    (45, 30),    # 15 from 30, 45 from 90
    (60, 90),    # tie 30 / 90: the longer window
    (80, 90),
    (200, 90),   # 110 from 90, 165 from 365
    (300, 365),
])
def test_last_period_picks_the_window_closest_to_h_and_scales_it(horizon, window):
    f = clv_snapshot()
    np.testing.assert_allclose(last_period(f, horizon), f[f"spend_{window}d"] * horizon / window)


def test_last_period_clips_refunds_and_falls_back_to_the_historical_rate():
    f = pd.DataFrame({"spend_30d": [-20.0, 60.0], "spend_total": [100.0, 50.0], "tenure_days": [99, 49]})
    np.testing.assert_allclose(last_period(f, 15), [0.0, 30.0])
    no_windows = f.drop(columns="spend_30d")
    np.testing.assert_allclose(last_period(no_windows, 10), [100 / 100 * 10, 50 / 50 * 10])


def test_clv_values():
    test = clv_snapshot()
    test.loc[0, "spend_total"] = -40.0  # net refunds
    out = baselines("clv", test.iloc[:0], test, 90)
    assert out.scores == {} and set(out.values) == {"bgnbd_gamma_gamma", "last_period", "historical_rate"}
    bg = BGNBD(spend=True).fit(test).transform(test, 90)
    np.testing.assert_allclose(out.values["bgnbd_gamma_gamma"], bg["bgnbd_expected_spend"])
    np.testing.assert_allclose(out.values["last_period"], test["spend_90d"])
    assert out.values["historical_rate"][0] == 0.0  # clipped, not negative
    assert out.values["historical_rate"][1] == pytest.approx(35.0 / 41 * 90)
    for v in out.values.values():
        assert np.isfinite(v).all() and (v >= 0).all()


# ---------------------------------------------------------------------------- cross-sell
CATS = ["Grocery", "Home & Garden", "dairy"]


def cross_sell_train() -> pd.DataFrame:
    old, new = date(2024, 1, 1), date(2024, 2, 1)
    rows = (
        # the older origin says dairy is popular and Grocery is not: must be ignored
        [(old, "dairy", 1)] * 4 + [(old, "Grocery", 0)] * 4
        # latest origin: Grocery 3/4, Home & Garden 1/4, dairy 0/2
        + [(new, "Grocery", 1)] * 3 + [(new, "Grocery", 0)]
        + [(new, "Home & Garden", 1)] + [(new, "Home & Garden", 0)] * 3
        + [(new, "dairy", 0)] * 2
    )
    return pd.DataFrame(rows, columns=["as_of", "category", "label"])


def cross_sell_test() -> pd.DataFrame:
    never = np.nan
    rows = [
        # customer, category, orders_30d, orders_90d, recency_days, days_since_grocery, _home_garden, _dairy
        ("a", "Grocery", 2, 5, 3, 400.0, never, 0.0),
        ("a", "Home & Garden", 2, 5, 3, 400.0, never, 0.0),
        ("b", "Home & Garden", 2, 9, 20, never, 5.0, never),
        ("b", "dairy", 2, 9, 20, never, 5.0, never),
        ("c", "Grocery", 0, 1, 60, never, 400.0, 30.0),
        ("c", "toys", 1, 1, 10, never, 400.0, 30.0),  # not offered at the latest origin, no column
    ]
    return pd.DataFrame(rows, columns=["customer_id", "category", "orders_30d", "orders_90d", "recency_days",
                                       *[f"days_since_{slug(c)}" for c in CATS]])


def test_slug_names_the_category_columns():
    assert [f"days_since_{slug(c)}" for c in CATS] == ["days_since_grocery", "days_since_home_garden",
                                                       "days_since_dairy"]


def test_popularity_uses_only_the_latest_training_origin():
    out = baselines("cross-sell", cross_sell_train(), cross_sell_test(), H)
    assert set(out.scores) == {"popularity", "recent_activity", "category_recency"} and out.values == {}
    np.testing.assert_allclose(out.scores["popularity"], [0.75, 0.25, 0.25, 0.0, 0.75, 0.0])


def test_popularity_accepts_categorical_columns():
    train = cross_sell_train().astype({"category": "category"})
    test = cross_sell_test().astype({"category": "category"})
    out = baselines("cross-sell", train, test, H)
    np.testing.assert_allclose(out.scores["popularity"], [0.75, 0.25, 0.25, 0.0, 0.75, 0.0])


def test_recent_activity_counts_the_shortest_window_and_breaks_ties_by_recency():
    out = baselines("cross-sell", cross_sell_train(), cross_sell_test(), H)
    ra = out.scores["recent_activity"]
    np.testing.assert_allclose(ra, [2 + 1 / 5, 2 + 1 / 5, 2 + 1 / 22, 2 + 1 / 22, 0 + 1 / 62, 1 + 1 / 12])
    assert ra[0] > ra[2] > ra[5] > ra[4]  # same count: the more recent order first; counts dominate
    # without orders_<n>d windows, frequency is the count
    test = cross_sell_test().drop(columns=["orders_30d", "orders_90d"]).assign(frequency=[4, 4, 1, 1, 0, 0])
    ra = baselines("cross-sell", cross_sell_train(), test, H).scores["recent_activity"]
    np.testing.assert_allclose(ra, [4 + 1 / 5, 4 + 1 / 5, 1 + 1 / 22, 1 + 1 / 22, 1 / 62, 1 / 12])


def test_category_recency_ranks_long_ago_above_never():
    out = baselines("cross-sell", cross_sell_train(), cross_sell_test(), H)
    cr = out.scores["category_recency"]
    # a/Grocery 400 days, a/Home & Garden never, b/Home & Garden 5 days, b/dairy never,
    # c/Grocery never, c/toys: no days_since column -> as never
    np.testing.assert_allclose(cr, [1 / 401, 0.0, 1 / 6, 0.0, 0.0, 0.0])
    assert cr[2] > cr[0] > cr[1]  # recently > long ago > never
    # bought today (0 days) is the top score
    test = cross_sell_test()
    test.loc[3, "days_since_dairy"] = 0.0
    assert baselines("cross-sell", cross_sell_train(), test, H).scores["category_recency"][3] == 1.0


def test_unknown_task_is_rejected():
    with pytest.raises(ValueError, match="unknown task 'upsell'"):
        baselines("upsell", snapshot(), snapshot(), H)
