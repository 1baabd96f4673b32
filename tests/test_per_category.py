"""A per-category cross-sell champion (`cross_sell_mode: per_category`, one model per
category) is trained, served over HTTP and batch-scored like a pooled one, and all three
give the probabilities its own boosters give, to 1e-6."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cvm.cli import app
from features.definitions import slug
from scoring.champions import RegistrySource
from tests.serving_fixtures import AS_OF, REPO, SMALL_TRAIN, start_server, stop_server

pytestmark = pytest.mark.server

CUSTOMERS = 40  # scored over HTTP and compared


@pytest.fixture(scope="module")
def per_category_home(served_home, tmp_path_factory):
    """A copy of the served home whose cross-sell champion is a per-category model."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    root = tmp_path_factory.mktemp("per-category")
    home = root / "home"
    shutil.copytree(served_home.home, home, ignore=shutil.ignore_patterns("bentoml"))
    exp = root / "experiments"
    exp.mkdir()
    (exp / "synthetic.yaml").write_text((REPO / "experiments" / "synthetic.yaml").read_text())
    (exp / "cross-sell.yaml").write_text("extends: synthetic.yaml\n" + SMALL_TRAIN + "  cross_sell_mode: per_category\n")
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    try:
        runner = CliRunner()
        r = runner.invoke(app, ["train", "cross-sell", "--dataset", str(served_home.dataset), "--as-of", AS_OF,
                                "--experiments", str(exp), "--home", str(home)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        src = RegistrySource(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        new = max(int(v.version) for v in src.client().search_model_versions("name = 'cvm-cross-sell'"))
        r = runner.invoke(app, ["models", "promote", "cross-sell", str(new), "--home", str(home)])
        assert r.exit_code == 0, r.output
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
    return replace(served_home, home=home)


def _reference(model, snapshot: pd.DataFrame) -> np.ndarray:
    """customers x categories, from the per-category boosters themselves: each eligible
    (customer, category) row through the encoder's matrix of the pandas design, that
    category's booster and sklearn's calibrator; NaN outside the population or for a
    category too thin for a model of its own."""
    out = np.full((len(snapshot), len(model.categories)), np.nan)
    for k, c in enumerate(model.categories):
        days = snapshot[f"days_since_{slug(c)}"].to_numpy(dtype="float64")
        rows = np.flatnonzero(np.isnan(days) | (days > model.lookback_days))
        if c not in model.per_category or not len(rows):
            continue
        x = model.matrix(snapshot.iloc[rows].assign(category=c))
        out[rows, k] = model.calibrator.transform(model.per_category[c].predict(x))
    return out


def test_a_per_category_champion_is_served_and_batch_scored(per_category_home, tmp_path):
    home = per_category_home.home
    src = RegistrySource(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    champion = src.load("cross-sell", src.versions()["cross-sell"])
    model = champion.model.model
    assert model.per_category, "the champion is not a per-category model"
    snapshot = pd.read_parquet(home / "features" / per_category_home.name / f"as_of={AS_OF}")
    snapshot = snapshot.sort_values("customer_id", kind="stable").reset_index(drop=True)
    want = _reference(model, snapshot)
    assert np.isfinite(want).sum() > 100

    # the MLflow pyfunc
    wide = model.predict(snapshot).drop(columns="customer_id").to_numpy()
    np.testing.assert_array_equal(np.isnan(wide), np.isnan(want))
    np.testing.assert_allclose(wide[np.isfinite(want)], want[np.isfinite(want)], rtol=0, atol=1e-6)

    # the nightly batch
    out = tmp_path / "batch"
    r = CliRunner().invoke(app, ["score-batch", "--as-of", AS_OF, "--dataset", str(per_category_home.dataset),
                                 "--catalog", str(per_category_home.catalog), "--out", str(out), "--no-publish",
                                 "--home", str(home)])
    assert r.exit_code == 0, r.output
    pairs = pd.read_parquet(out / f"as_of={AS_OF}" / "cross_sell.parquet")
    rows, cols = np.nonzero(np.isfinite(want))
    expected = pd.DataFrame({"customer_id": snapshot.customer_id.to_numpy()[rows],
                             "category": np.asarray(model.categories, dtype=object)[cols], "want": want[rows, cols]})
    both = expected.merge(pairs, on=["customer_id", "category"], how="outer", indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"].head()
    np.testing.assert_allclose(both.probability, both.want, rtol=0, atol=1e-6)
    offers = pd.read_parquet(out / f"as_of={AS_OF}" / "offers.parquet")
    assert (offers.type == "cross_sell").any()

    # the service over HTTP: each customer's top categories and their probabilities
    server = start_server(per_category_home, tmp_path / "server.log", reload_seconds=0)
    try:
        ids = snapshot.customer_id.astype(str).tolist()[:CUSTOMERS]
        with server.client() as c:
            answer = c.post("/score", json={"customer_ids": ids, "reasons": False})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_versions"]["cross-sell"] == champion.version
        index = {c: k for k, c in enumerate(model.categories)}
        for i, result in enumerate(answer.json()["results"]):
            row = want[i]
            got = result["cross_sell"]
            # each category shown has the reference's probability...
            np.testing.assert_allclose([x["probability"] for x in got], [row[index[x["category"]]] for x in got],
                                       rtol=0, atol=1e-6)
            # ...and they are the customer's three highest (isotonic calibration makes ties, whose order is free)
            top = np.sort(row[np.isfinite(row)])[::-1][:3]
            np.testing.assert_allclose([x["probability"] for x in got], top, rtol=0, atol=1e-6)
    finally:
        stop_server(server)
