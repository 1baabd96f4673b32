"""BG/NBD (+ Gamma-Gamma): the published CDNOW fit, the derived P(purchase), and the snapshot wrapper."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from training.bgnbd import (
    BGNBD,
    INPUT_COLUMNS,
    OUTPUT_COLUMNS,
    bgnbd_predictions,
    fit_bgnbd_params,
    gamma_gamma_value,
    rfm_summary,
)

#: Fader, Hardie & Lee (2005), table/section 5: the BG/NBD fit on the CDNOW sample (weeks)
FHL_PARAMS = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    from lifetimes.datasets import load_cdnow_summary

    return load_cdnow_summary(index_col=[0])


@pytest.fixture(scope="module")
def cdnow_params(cdnow) -> dict[str, float]:
    return fit_bgnbd_params(cdnow, penalizer=0.0)


# ---------------------------------------------------------------------------- the literature
def test_cdnow_fit_reproduces_fader_hardie_lee_2005(cdnow, cdnow_params):
    assert len(cdnow) == 2357
    for key, expected in FHL_PARAMS.items():
        assert cdnow_params[key] == pytest.approx(expected, abs=1e-3), key


def test_cdnow_conditional_expectation_matches_hardie_spreadsheet(cdnow_params):
    # FHL (2005) / Hardie's spreadsheet: x = 2, t_x = 30.43, T = 38.86 -> 1.226 purchases in 39 weeks
    _, expected, _ = bgnbd_predictions(cdnow_params, np.array([2.0]), np.array([30.43]), np.array([38.86]), 39.0)
    assert expected[0] == pytest.approx(1.226, abs=1e-3)


def _hand_p_alive(params, x, tx, T):
    """Hardie's note 021, written out independently of lifetimes."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    odds = np.where(x > 0, a / (b + np.maximum(x, 1) - 1) * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
    return 1.0 / (1.0 + odds)


def _hand_expected(params, x, tx, T, t):
    """FHL (2005) eq. 10 with scipy's Gauss hypergeometric function."""
    from scipy.special import hyp2f1

    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    z = t / (alpha + T + t)
    body = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x)
                                        * hyp2f1(r + x, b + x, a + b + x - 1, z))
    return body * _hand_p_alive(params, x, tx, T)


def test_predictions_match_formulas_written_out_by_hand():
    x = np.array([0.0, 1.0, 2.0, 7.0, 2.0])
    tx = np.array([0.0, 5.0, 30.43, 20.0, 1.0])
    T = np.array([20.0, 38.86, 38.86, 38.86, 38.86])
    p_alive, expected, p_purchase = bgnbd_predictions(FHL_PARAMS, x, tx, T, 10.0)
    np.testing.assert_allclose(p_alive, _hand_p_alive(FHL_PARAMS, x, tx, T), rtol=1e-10)
    np.testing.assert_allclose(expected, _hand_expected(FHL_PARAMS, x, tx, T, 10.0), rtol=1e-8)
    assert p_alive[0] == 1.0  # no repeat purchase: cannot have dropped out yet
    # P(no purchase in t) = 1 - P(alive) + P(alive) ((a+T)/(a+T+t))^(r+x), so p_purchase is its complement
    r, alpha = FHL_PARAMS["r"], FHL_PARAMS["alpha"]
    p_none = 1 - p_alive + p_alive * ((alpha + T) / (alpha + T + 10.0)) ** (r + x)
    np.testing.assert_allclose(p_purchase, 1 - p_none, rtol=1e-10)


def test_p_purchase_of_a_newcomer_is_the_nbd_zero_class_complement():
    # x = 0, T = 0: no history, so P(X(t) = 0) is the unconditional (alpha / (alpha + t))^r,
    # which lifetimes computes as probability_of_n_purchases_up_to_time(t, 0)
    from lifetimes import BetaGeoFitter

    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series(FHL_PARAMS)
    for t in (1.0, 13.0, 52.0):
        _, _, p_purchase = bgnbd_predictions(FHL_PARAMS, np.array([0.0]), np.array([0.0]), np.array([0.0]), t)
        assert p_purchase[0] == pytest.approx(1 - float(fitter.probability_of_n_purchases_up_to_time(t, 0)),
                                              rel=1e-9)
        assert p_purchase[0] == pytest.approx(1 - (FHL_PARAMS["alpha"] / (FHL_PARAMS["alpha"] + t)) ** FHL_PARAMS["r"])


def test_p_purchase_and_expectation_agree_with_monte_carlo_of_the_posterior():
    """Simulate the future of customers with a given history and compare.

    Given (x, t_x, T), a customer is alive with P(alive); then lambda ~ Gamma(r + x, alpha + T)
    and p ~ Beta(a, b + x), and the number of purchases in the next t is min(K, G) with
    K ~ Poisson(lambda t) and G ~ Geometric(p) (drop-out right after the G-th purchase).
    """
    rng = np.random.default_rng(20050401)
    n = 400_000
    r, alpha, a, b = (FHL_PARAMS[k] for k in ("r", "alpha", "a", "b"))
    t = 20.0
    for x, tx, T in ((2.0, 30.43, 38.86), (6.0, 10.0, 38.86), (0.0, 0.0, 30.0)):
        p_alive, expected, p_purchase = bgnbd_predictions(FHL_PARAMS, np.array([x]), np.array([tx]),
                                                          np.array([T]), t)
        alive = rng.random(n) < p_alive[0]
        lam = rng.gamma(r + x, 1.0 / (alpha + T), n)
        p = rng.beta(a, b + x, n)
        k = rng.poisson(lam * t)
        g = rng.geometric(p)
        purchases = np.where(alive, np.minimum(k, g), 0)
        se_p = np.sqrt(p_purchase[0] * (1 - p_purchase[0]) / n)
        assert abs(np.mean(purchases > 0) - p_purchase[0]) < 5 * se_p + 1e-4, (x, tx, T)
        se_e = np.std(purchases) / np.sqrt(n)
        assert abs(np.mean(purchases) - expected[0]) < 5 * se_e + 1e-4, (x, tx, T)


def test_gamma_gamma_value_golden():
    params = {"p": 6.0, "q": 4.0, "v": 15.0}  # population mean p v / (q - 1) = 30
    value = gamma_gamma_value(params, np.array([2.0, 0.0, 3.0, 3.0, 1.0]),
                              np.array([50.0, 80.0, -5.0, np.nan, 30.0]))
    # x = 2: weight 12 / (12 + 3) = 0.8 -> 0.2 * 30 + 0.8 * 50; unusable histories get 30
    np.testing.assert_allclose(value, [46.0, 30.0, 30.0, 30.0, 30.0])


# ---------------------------------------------------------------------------- snapshot wrapper
ROWS = [
    # customer_id, purchase_days, recency_days, tenure_days, avg_order_value
    ("c01", 1, 300, 300, 20.0),
    ("c02", 1, 40, 40, 35.0),
    ("c03", 2, 100, 250, 18.0),
    ("c04", 3, 10, 200, 22.0),
    ("c05", 5, 5, 360, 30.0),
    ("c06", 8, 2, 365, 28.0),
    ("c07", 4, 280, 350, 50.0),
    ("c08", 5, 300, 360, 15.0),
    ("c09", 6, 30, 300, 40.0),
    ("c10", 1, 120, 120, 25.0),
    ("c11", 3, 60, 180, 33.0),
    ("c12", 10, 1, 365, 26.0),
    ("c13", 6, 250, 330, 19.0),
    ("c14", 4, 200, 260, 45.0),
]


@pytest.fixture
def snapshot() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["customer_id", *INPUT_COLUMNS])


@pytest.fixture
def fitted(snapshot) -> BGNBD:
    return BGNBD().fit(snapshot)


def test_rfm_summary_maps_snapshot_columns_to_lifetimes_terms(snapshot):
    s = rfm_summary(snapshot.iloc[[0, 2, 3]].set_index(pd.Index([7, 8, 9])))
    assert list(s.columns) == ["frequency", "recency", "T", "monetary_value"]
    assert list(s.index) == [0, 1, 2]
    assert s["frequency"].tolist() == [0, 1, 2]
    assert s["recency"].tolist() == [0.0, 150.0, 190.0]  # tenure - recency_days
    assert s["T"].tolist() == [300.0, 250.0, 200.0]
    assert s["monetary_value"].tolist() == [20.0, 18.0, 22.0]


@pytest.mark.parametrize("column", INPUT_COLUMNS)
def test_rfm_summary_missing_column_is_a_key_error_naming_it(snapshot, column):
    with pytest.raises(KeyError, match=column):
        rfm_summary(snapshot.drop(columns=column))


@pytest.mark.parametrize(("change", "message"), [
    ({"recency_days": 400}, "'recency_days' exceeds 'tenure_days'"),
    ({"recency_days": -1}, "must not be negative"),
    ({"purchase_days": 0}, "whole numbers >= 1"),
    ({"purchase_days": 2.5}, "whole numbers >= 1"),
    ({"tenure_days": np.nan}, "'tenure_days' has 1 missing"),
    ({"purchase_days": 1, "recency_days": 100}, "purchase_days == 1 must have recency_days == tenure_days"),
])
def test_rfm_summary_rejects_impossible_snapshots(snapshot, change, message):
    bad = snapshot.astype({c: "float64" for c in INPUT_COLUMNS})
    for column, value in change.items():
        bad.loc[4, column] = value
    with pytest.raises(ValueError, match=message):
        rfm_summary(bad)


def test_rfm_summary_rejects_text(snapshot):
    bad = snapshot.astype({"tenure_days": "object"})
    bad.loc[0, "tenure_days"] = "soon"
    with pytest.raises(ValueError, match="'tenure_days' must be numeric"):
        rfm_summary(bad)


def test_transform_outputs_are_finite_and_probabilities(fitted, snapshot):
    out = fitted.transform(snapshot, 30)
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert len(out) == len(snapshot)
    assert np.isfinite(out.to_numpy()).all()
    for col in ("bgnbd_p_alive", "bgnbd_p_purchase"):
        assert out[col].between(0.0, 1.0).all(), col
    assert (out["bgnbd_p_purchase"] <= out["bgnbd_p_alive"] + 1e-12).all()
    # P(at least one) <= E[count]
    assert (out["bgnbd_p_purchase"] <= out["bgnbd_expected_purchases"] + 1e-12).all()
    assert (out["bgnbd_expected_spend"] >= 0).all()
    # single-purchase customers cannot have dropped out (BG/NBD drops out after a repeat purchase)
    assert (out.loc[snapshot["purchase_days"] == 1, "bgnbd_p_alive"] == 1.0).all()
    assert 0.0 < fitted.params_["a"] and fitted.n_customers_ == len(snapshot)


def test_transform_p_purchase_is_the_complement_of_no_purchase(fitted, snapshot):
    h = 45
    out = fitted.transform(snapshot, h)
    s = rfm_summary(snapshot)
    r, alpha = fitted.params_["r"], fitted.params_["alpha"]
    pa = out["bgnbd_p_alive"].to_numpy()
    p_none = 1 - pa + pa * ((alpha + s["T"]) / (alpha + s["T"] + h)) ** (r + s["frequency"])
    np.testing.assert_allclose(out["bgnbd_p_purchase"], 1 - p_none, rtol=1e-9, atol=1e-12)


def test_recent_buyer_is_more_alive_than_a_silent_twin(fitted):
    twins = pd.DataFrame({"customer_id": ["fresh", "silent"], "purchase_days": [5, 5],
                          "recency_days": [1, 200], "tenure_days": [365, 365], "avg_order_value": [30.0, 30.0]})
    out = fitted.transform(twins, 30)
    assert out.loc[0, "bgnbd_p_alive"] > out.loc[1, "bgnbd_p_alive"]
    assert out.loc[0, "bgnbd_p_purchase"] > out.loc[1, "bgnbd_p_purchase"]
    assert out.loc[0, "bgnbd_expected_purchases"] > out.loc[1, "bgnbd_expected_purchases"]


def test_expectations_grow_with_the_horizon(fitted, snapshot):
    outs = [fitted.transform(snapshot, h) for h in (7, 30, 90, 365)]
    for shorter, longer in itertools.pairwise(outs):
        assert (longer["bgnbd_expected_purchases"] > shorter["bgnbd_expected_purchases"]).all()
        assert (longer["bgnbd_p_purchase"] >= shorter["bgnbd_p_purchase"]).all()
        assert (longer["bgnbd_expected_spend"] > shorter["bgnbd_expected_spend"]).all()
        # P(alive) now does not depend on the horizon
        np.testing.assert_allclose(longer["bgnbd_p_alive"], shorter["bgnbd_p_alive"])


def test_fit_collapses_rows_repeated_per_category_and_keeps_input(snapshot):
    repeated = pd.concat([snapshot.assign(category="grocery"), snapshot.assign(category="dairy")],
                         ignore_index=True)
    before = repeated.copy()
    a, b = BGNBD().fit(snapshot), BGNBD().fit(repeated)
    pd.testing.assert_frame_equal(repeated, before)
    assert b.n_customers_ == len(snapshot)
    for key in a.params_:
        assert b.params_[key] == pytest.approx(a.params_[key], rel=1e-9)
    assert len(b.transform(repeated, 30)) == len(repeated)  # transform stays row by row


def test_spend_uses_gamma_gamma_or_the_mean_order_value(snapshot):
    with_gg = BGNBD().fit(snapshot)
    assert set(with_gg.gg_params_) == {"p", "q", "v"} and with_gg.gg_params_["q"] > 1
    p, q, v = (with_gg.gg_params_[k] for k in ("p", "q", "v"))
    assert with_gg.population_value_ == pytest.approx(p * v / (q - 1))

    plain = BGNBD(spend=False).fit(snapshot)
    assert plain.gg_params_ is None
    assert plain.population_value_ == pytest.approx(snapshot["avg_order_value"].mean())
    out = plain.transform(snapshot, 30)
    np.testing.assert_allclose(out["bgnbd_expected_spend"],
                               out["bgnbd_expected_purchases"] * snapshot["avg_order_value"].mean())


def test_fitted_model_pickles_small_and_without_data(fitted, snapshot):
    blob = pickle.dumps(fitted)
    assert len(blob) < 2_000  # a few floats, not the training frame or a lifetimes fitter
    assert b"c01" not in blob
    for value in vars(fitted).values():
        assert not isinstance(value, (pd.DataFrame, pd.Series, np.ndarray))
        assert "lifetimes" not in type(value).__module__
    again = pickle.loads(blob)
    pd.testing.assert_frame_equal(again.transform(snapshot, 30), fitted.transform(snapshot, 30))


def test_transform_guards(snapshot):
    with pytest.raises(NotFittedError):
        BGNBD().transform(snapshot, 30)
    model = BGNBD().fit(snapshot)
    for horizon in (0, -5):
        with pytest.raises(ValueError, match="horizon_days"):
            model.transform(snapshot, horizon)
    with pytest.raises(ValueError, match="penalizer"):
        BGNBD(penalizer=-1.0).fit(snapshot)
    with pytest.raises(ValueError, match="at least one customer"):
        BGNBD().fit(snapshot.iloc[:0])
    with pytest.raises(ValueError, match="repeat customers"):
        BGNBD().fit(snapshot.assign(avg_order_value=-1.0))
