"""The one prediction path (service, batch, MLflow pyfunc) against the training-side
matrices: FeatureEncoder over the pandas design, sklearn's calibrator, LightGBM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.definitions import slug
from scoring.champions import Champion, RegistrySource
from serving.engine import build_state, score
from tests.serving_fixtures import AS_OF
from training.bgnbd import bgnbd_predictions
from training.predictor import block_from_frame, block_from_records


@pytest.fixture(scope="module")
def champions(served_home) -> dict[str, Champion]:
    src = RegistrySource(f"sqlite:///{served_home.home / 'mlflow' / 'mlflow.db'}")
    return {t: src.load(t, v) for t, v in src.versions().items()}


@pytest.fixture(scope="module")
def snapshot(served_home) -> pd.DataFrame:
    return pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={AS_OF}")


def _training_side(model, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """A champion's outputs computed the way training computes them, independently of the
    predictor: the encoder's matrix of the pandas design, booster.predict, sklearn's
    calibrator, the pandas BG/NBD offset."""
    x = model.matrix(frame)
    if model.task == "clv":
        return {"clv": np.clip(model.booster.predict(x) + model.clv_offset(frame), 0.0, None)}
    p = model.calibrator.transform(model.booster.predict(x))
    if model.task == "churn":
        return {"churn_probability": p}
    return {"next_purchase_probability": p, "expected_orders": np.clip(model.count_booster.predict(x), 0.0, None)}


def _cross_sell_rows(snapshot: pd.DataFrame, model) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(customer, category) rows of the cross-sell population, by hand: categories the
    customer has not bought in the lookback days (or never)."""
    parts, rows, cats = [], [], []
    for k, c in enumerate(model.categories):
        days = snapshot[f"days_since_{slug(c)}"].to_numpy(dtype="float64")
        hit = np.flatnonzero(np.isnan(days) | (days > model.lookback_days))
        parts.append(snapshot.iloc[hit].assign(category=c))
        rows.append(hit)
        cats.append(np.full(len(hit), k))
    return pd.concat(parts, ignore_index=True), np.concatenate(rows), np.concatenate(cats)


def test_the_prediction_path_equals_the_training_side(champions, snapshot):
    n = len(snapshot)
    for task, ch in champions.items():
        model = ch.model.model
        block = block_from_frame(snapshot, ch.model.columns)
        if task == "cross-sell":
            pairs, rows, cats = _cross_sell_rows(snapshot, model)
            want = model.calibrator.transform(model.booster.predict(model.matrix(pairs)))
            got = ch.model.cross_sell(block, n)
            np.testing.assert_allclose(got[rows, cats], want, rtol=0, atol=1e-12)
            outside = np.ones_like(got, dtype=bool)
            outside[rows, cats] = False
            assert np.isnan(got[outside]).all()
            # the pyfunc's wide frame is the same matrix
            wide = model.predict(snapshot).drop(columns="customer_id").to_numpy()
            np.testing.assert_array_equal(np.isnan(wide), np.isnan(got))
            np.testing.assert_allclose(wide[~np.isnan(wide)], got[~np.isnan(got)], rtol=0, atol=0)
            continue
        want = _training_side(model, snapshot)
        out = ch.model.score(block, n, reasons=True).values
        assert set(out) == set(want)
        for key, values in out.items():
            np.testing.assert_allclose(values, want[key], rtol=0, atol=1e-12, err_msg=f"{task} {key}")
        # and the training matrix is the predictor's matrix
        np.testing.assert_array_equal(ch.model.matrix(block, n)[0], model.matrix(snapshot))


def test_single_records_score_like_frames(champions, snapshot):
    ch = champions["churn"]
    rows = snapshot.iloc[:5]
    records = [r._asdict() for r in rows.itertuples(index=False)]
    a = ch.model.score(block_from_records(records, ch.model.columns, ch.model.string_columns), 5).values
    b = ch.model.score(block_from_frame(rows, ch.model.columns), 5).values
    np.testing.assert_allclose(a["churn_probability"], b["churn_probability"], atol=1e-12)


def test_missing_features_give_finite_scores_not_errors(champions, snapshot):
    """A row with NaN everywhere (or impossible BG/NBD inputs) is scored, never a crash."""
    rows = snapshot.iloc[:3].copy()
    for c in rows.columns:
        if c not in ("customer_id", "as_of") and pd.api.types.is_numeric_dtype(rows[c]):
            rows.loc[rows.index[0], c] = np.nan
    rows.loc[rows.index[1], "recency_days"] = rows.loc[rows.index[1], "tenure_days"] + 10  # impossible
    for task, ch in champions.items():
        block = block_from_frame(rows, ch.model.columns)
        if task == "cross-sell":
            p = ch.model.cross_sell(block, 3)
            assert np.isfinite(p[0]).all()  # never bought anything: every category is a candidate
        else:
            for key, v in ch.model.score(block, 3).values.items():
                assert np.isfinite(v).all(), (task, key, v)


def test_bgnbd_numpy_formulas_equal_lifetimes():
    params = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, CDNOW
    rng = np.random.default_rng(0)
    T = rng.uniform(1, 80, 500)
    tx = T * rng.uniform(0, 1, 500)
    x = np.where(rng.random(500) < 0.4, 0.0, rng.integers(1, 30, 500)).astype(float)
    tx = np.where(x == 0, 0.0, tx)
    p_alive, expected, _ = bgnbd_predictions(params, x, tx, T, 39.0)
    from lifetimes import BetaGeoFitter

    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series(params, dtype="float64")[["r", "alpha", "a", "b"]]
    np.testing.assert_allclose(p_alive, fitter.conditional_probability_alive(x, tx, T), rtol=1e-12)
    np.testing.assert_allclose(expected, fitter.conditional_expected_number_of_purchases_up_to_time(39.0, x, tx, T),
                               rtol=1e-10)


def test_state_refuses_a_snapshot_without_the_models_features(champions, served_home, tmp_path):
    """A model whose inputs the published snapshot lacks is not served (clear reason)."""
    from features.online_store import SQLiteOnlineStore
    from scoring.catalog import parse_catalog
    from scoring.champions import NotReadyError
    from tests.serving_fixtures import catalog_for

    snap_dir = served_home.home / "features" / served_home.name / f"as_of={AS_OF}"
    frame = pd.read_parquet(snap_dir).drop(columns=["recency_days"])
    part = tmp_path / "snap"
    part.mkdir()
    frame.to_parquet(part / "part-0.parquet")
    store = SQLiteOnlineStore(tmp_path / "online")
    store.publish(part, as_of=pd.Timestamp(AS_OF).date())
    catalog = parse_catalog(catalog_for(served_home.categories))
    with pytest.raises(NotReadyError, match="recency_days"):
        build_state("x", champions, store, catalog)
    good = SQLiteOnlineStore(served_home.home / "online" / served_home.name)
    state = build_state("x", champions, good, catalog)
    out = score(state, [frame.customer_id.iloc[0], "nobody"])
    assert out[0]["found"] and not out[1]["found"]
    assert out[1]["churn_probability"] == pytest.approx(state.priors["churn_probability"], abs=1e-6)


def test_a_broken_champion_is_rejected_and_the_previous_one_keeps_serving(served_home, tmp_path):
    """A version that cannot be loaded is promoted: the holder rejects it (counted, logged),
    keeps serving the loaded champion, and does not retry it on every poll."""
    from mlflow import MlflowClient

    from serving.settings import ServiceSettings
    from serving.state import StateHolder
    from tests.serving_fixtures import API_KEY
    from training import registry

    uri = f"sqlite:///{served_home.home / 'mlflow' / 'mlflow.db'}"
    settings = ServiceSettings(home=served_home.home, dataset=str(served_home.dataset),
                               catalog=served_home.catalog, api_keys=(API_KEY,), reload_seconds=0,
                               tracking_uri=uri)
    failures: list[str] = []
    holder = StateHolder(settings, on_failure=failures.append)
    first = holder.load()
    assert first.changed and holder.state.model_versions["churn"] == "1"

    bad = tmp_path / "broken-model"
    bad.mkdir()
    (bad / "MLmodel").write_text("this: is not [a model")
    client = MlflowClient(uri, registry_uri=uri)
    v = client.create_model_version("cvm-churn", str(bad))
    registry.promote(client, "churn", str(v.version), reason="test: broken")
    try:
        before = holder.state
        outcome = holder.load()
        assert failures == ["churn"]
        assert outcome.failures and "churn version" in outcome.failures[0]
        assert holder.state.model_versions["churn"] == "1"
        assert holder.state.champions["churn"] is before.champions["churn"]
        again = holder.load()  # the rejected version is not retried on each poll
        assert failures == ["churn"] and not again.changed
    finally:
        registry.rollback(client, "churn")
