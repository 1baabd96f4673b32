"""The uplift champion's scoring path (scoring.uplift_scores) against the pandas path the
MLflow pyfunc and the training evaluation use, and its wiring into offers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.uplift_scores import UpliftChampion, UpliftScorer, missing_columns, uplift_for
from training.encode import FeatureEncoder
from training.predictor import block_from_frame
from training.uplift.learners import DRLearner, TLearner, XLearner
from training.uplift.model import OFFER_COLUMN, UpliftModel

OFFERS = ["a", "b", "c"]
PARAMS = {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 20}


def _problem(n: int = 3000, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x1": rng.normal(size=n),
        "x2": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),  # missing values go through too
        "tier": rng.choice(["gold", "silver", "bronze"], size=n).astype(object),
        OFFER_COLUMN: rng.choice(OFFERS, size=n),
    })
    t = (rng.random(n) < 0.5).astype(int)
    effect = 0.15 * (frame["x1"] > 0) * (frame[OFFER_COLUMN] != "c")
    y = (rng.random(n) < 0.2 + t * effect).astype(int)
    return frame, t, y


def _model(learner, mode: str) -> UpliftModel:
    frame, t, y = _problem()
    features = ["x1", "x2", "tier"]
    enc = FeatureEncoder(features).fit(frame)
    model = UpliftModel(learner.__name__[0].lower(), mode, features, enc, OFFERS)
    x = model.design(frame)
    if mode == "pooled":
        model.models["*"] = learner(outcome="binary", params=PARAMS, n_bags=3, random_state=1).fit(
            x, t, y, propensity=np.full(len(t), 0.5))
    else:
        for o in OFFERS[:2]:  # "c" gets no model: an offer too rare to fit
            rows = np.flatnonzero(frame[OFFER_COLUMN].to_numpy() == o)
            model.models[o] = learner(outcome="binary", params=PARAMS, n_bags=3, random_state=1).fit(
                x.iloc[rows], t[rows], y[rows])
    return model


@pytest.mark.parametrize("learner", [TLearner, XLearner, DRLearner])
@pytest.mark.parametrize("mode", ["pooled", "per_offer"])
def test_scorer_matches_the_pyfunc_path(learner, mode):
    model = _model(learner, mode)
    customers, _, _ = _problem(n=40, seed=11)
    customers = customers.drop(columns=[OFFER_COLUMN])
    customers.loc[0, "tier"] = "platinum"  # a value the model never saw: NaN, as in training's encoder
    customers.loc[1, "tier"] = None
    scorer = UpliftScorer(model)
    got = scorer.score(block_from_frame(customers), len(customers))
    expected_offers = OFFERS if mode == "pooled" else OFFERS[:2]
    assert sorted(got) == expected_offers
    for o in expected_offers:
        frame = customers.assign(**{OFFER_COLUMN: o})
        want = model.scores(frame)
        est, low, high = got[o]
        np.testing.assert_allclose(est, want["uplift"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(low, want["uplift_low"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(high, want["uplift_high"], rtol=0, atol=1e-9)
        assert np.all(low <= est) and np.all(est <= high)


def test_scorer_scores_only_the_offers_asked_for_and_says_what_it_lacks():
    model = _model(TLearner, "per_offer")
    customers, _, _ = _problem(n=5, seed=2)
    block = block_from_frame(customers.drop(columns=[OFFER_COLUMN]))
    champion = UpliftChampion("cvm-uplift", "4", UpliftScorer(model), "models:/cvm-uplift/4")
    assert list(uplift_for(champion, block, 5, ["b", "c", "unknown"])) == ["b"]  # c: no model, unknown: not the model's
    assert uplift_for(None, block, 5, OFFERS) == {}
    assert missing_columns(champion, ["x1", "tier"]) == ["x2"]
    with pytest.raises(KeyError, match="x2"):
        champion.scorer.score({"x1": np.zeros(2), "tier": np.array(["gold", "gold"], dtype=object)}, 2)
