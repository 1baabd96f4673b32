"""A snapshot carries the windows it was computed with: its fingerprint changes with them,
and the service and the nightly batch scale offer values by the snapshot's own RFM window.

On the tiny dataset (tests/conftest.py) at 2024-03-01, grocery buyers in the window are A
(20.00, order o2) and B (15.00 - 5.00 returned = 10.00): 15.00 on average, in the 365 days
before as_of and in the 180 days alike. A cross-sell offer's value is margin x a buyer's
spend over the catalog's 28-day horizon: 0.3 x 15 x 28 / 365 = 0.345205... with the default
window, 0.3 x 15 x 28 / 180 = 0.7 with a 180-day window. D never bought grocery, so the
grocery offer is open to D.
"""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cvm.cli import app
from features.config import FeatureConfig
from features.definitions import DatasetShape, declare
from tests.conftest import AS_OF

SHAPE = DatasetShape(categories=("grocery", "dairy", "bakery"))
CATALOG = {
    "version": "windows", "horizon_days": 28, "channels": ["email"],
    "experiment": {"control_share": 0.0, "exploration_share": 0.0},  # everyone gets the policy's offer
    "offers": [{"id": "xs-grocery", "name": "Try grocery", "type": "cross_sell", "target_category": "grocery",
                "value": {"model": "category_spend", "margin": 0.3}, "channels": ["email"]}],
}
VALUE = {365: 0.3 * 15 * 28 / 365, 180: 0.3 * 15 * 28 / 180}


def test_the_fingerprint_covers_the_windows():
    base = declare(FeatureConfig(), SHAPE)
    # the trend window changes no column name: only the values, which the fingerprint must see
    trend = declare(FeatureConfig(trend_window_days=60), SHAPE)
    assert trend.names == base.names and trend.fingerprint() != base.fingerprint()
    assert declare(FeatureConfig(rfm_window_days=180), SHAPE).fingerprint() != base.fingerprint()
    assert declare(FeatureConfig(abandoned_cart_hours=12), SHAPE).fingerprint() != base.fingerprint()
    assert declare(FeatureConfig(), SHAPE).fingerprint() == base.fingerprint()  # and nothing else


def _cross_sell_model(snapshot: pd.DataFrame):
    """A real, tiny cross-sell TaskModel (3 trees, pinned seed): the values tested here do not
    depend on its propensities, only on the snapshot and the catalog."""
    from features.definitions import slug
    from training.encode import FeatureEncoder
    from training.model import TaskModel, cross_sell_context

    categories = list(SHAPE.categories)
    features = ["recency_days", "frequency", "xs_category", "xs_days_since", "xs_spend_share"]
    pairs = pd.concat([snapshot.assign(category=c) for c in categories], ignore_index=True)
    design = cross_sell_context(pairs, categories)
    encoder = FeatureEncoder(features).fit(design)
    y = (np.arange(len(design)) % 2).astype(float)
    booster = lgb.train({"objective": "binary", "num_leaves": 3, "min_data_in_leaf": 1, "seed": 0, "verbose": -1},
                        lgb.Dataset(encoder.transform(design), y), num_boost_round=3)
    assert all(f"days_since_{slug(c)}" in snapshot for c in categories)
    return TaskModel("cross-sell", 28, features, encoder, booster, categories=categories, lookback_days=91)


@pytest.mark.parametrize("window", [365, 180])
def test_offer_values_are_scaled_by_the_snapshots_own_window(window, tiny_dataset, tmp_path, mlflow_home):
    import mlflow

    from features.online_store import SQLiteOnlineStore
    from features.snapshot import read_metadata
    from scoring.catalog import parse_catalog
    from scoring.champions import Champion
    from scoring.decisions import SQLiteDecisionStore
    from serving.engine import build_state, recommend
    from training import registry, tracking
    from training.model import PyfuncModel

    home = mlflow_home.root
    config = tmp_path / "windows.yaml"
    config.write_text(yaml.safe_dump({"features": {"rfm_window_days": window}}))
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    runner = CliRunner()
    r = runner.invoke(app, ["features", "build", "--dataset", str(tiny_dataset), "--as-of", AS_OF.isoformat(),
                            "--config", str(config), "--publish", "--home", str(home)])
    assert r.exit_code == 0, r.output
    root = home / "features" / "tiny"
    meta = read_metadata(root, AS_OF)
    assert meta["feature_config"]["rfm_window_days"] == window
    snapshot = pd.read_parquet(root / f"as_of={AS_OF}")
    model = _cross_sell_model(snapshot)

    # the service: window read from the published snapshot's metadata
    store = SQLiteOnlineStore(home / "online" / "tiny")
    state = build_state("tiny", {"cross-sell": Champion("cross-sell", "cvm-cross-sell", "1", model.predictor(), "t")},
                        store, parse_catalog(CATALOG))
    assert state.spend.per_buyer["grocery"] == pytest.approx(15 * 28 / window, rel=1e-12)
    offers = recommend(state, "D", decisions=SQLiteDecisionStore(tmp_path / "decisions.sqlite"))["offers"]
    assert [o["offer_id"] for o in offers] == ["xs-grocery"]
    assert offers[0]["value"] == pytest.approx(VALUE[window], abs=1e-4)  # the answer is rounded to 4 places
    store.close()

    # the nightly batch, through the CLI and a real registry
    client = tracking.configure(mlflow_home)
    with mlflow.start_run(experiment_id=tracking.experiment_id(client, mlflow_home, "cvm-cross-sell")):
        info = mlflow.pyfunc.log_model(name="model", python_model=PyfuncModel(model), pip_requirements=["mlflow"])
    registry.register_and_gate(client, "cross-sell", info.model_uri, 0.5, lambda uri: None)
    out = tmp_path / "batch"
    r = runner.invoke(app, ["score-batch", "--as-of", AS_OF.isoformat(), "--dataset", str(tiny_dataset),
                            "--catalog", str(catalog), "--out", str(out), "--no-publish", "--home", str(home)])
    assert r.exit_code == 0, r.output
    batch = pd.read_parquet(out / f"as_of={AS_OF}" / "offers.parquet")
    d = batch[batch.customer_id == "D"]
    assert d.offer_id.tolist() == ["xs-grocery"]
    assert d.value.iloc[0] == pytest.approx(VALUE[window], rel=1e-12)
    manifest = json.loads((out / f"as_of={AS_OF}" / "manifest.json").read_text())
    assert manifest["snapshot"]["feature_set_fingerprint"] == meta["fingerprint"]


def test_a_snapshot_without_its_windows_is_refused():
    """An older snapshot that does not record its feature configuration is not scored with a
    guessed window: the service says why it is not ready."""
    from features.snapshot import SchemaMismatchError, feature_config

    with pytest.raises(SchemaMismatchError, match="rebuild"):
        feature_config({"as_of": "2024-03-01", "fingerprint": "x"})
    assert feature_config({"feature_config": FeatureConfig(rfm_window_days=90).model_dump()}).rfm_window_days == 90
