"""Training end to end on a small synthetic dataset: time honesty, MLflow logging, the
registry gate, skipped tasks. Budgets are tiny (2 trials, 60 rounds): these tests check
behaviour, the Complete Journey run in the README checks quality."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from base.engines import DuckDBEngine
from base.home import Home
from cvm.cli import app
from sources.dataset import resolve_dataset
from sources.synth import generate
from tests.serving_fixtures import AS_OF, REPO, SMALL_TRAIN
from training.experiment import load_config
from training.tasks import TASKS


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "synth-600"
    generate(out, customers=600, seed=3)
    return out


@pytest.fixture(scope="module")
def experiments_dir(tmp_path_factory) -> Path:
    """Per-task YAMLs like the shipped ones, on the synthetic dataset's settings, tiny budgets."""
    d = tmp_path_factory.mktemp("experiments")
    shutil.copy(REPO / "experiments" / "synthetic.yaml", d / "synthetic.yaml")
    for task in TASKS:
        (d / f"{task}.yaml").write_text("extends: synthetic.yaml\n" + SMALL_TRAIN)
    return d


def _train(args: list[str], home: Path):
    return CliRunner().invoke(app, ["train", *args, "--home", str(home)], catch_exceptions=False)


def _latest_parent_run(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags), runs


@pytest.mark.server
def test_train_all_on_a_real_mlflow_server(mlflow_server, synth_dir, experiments_dir, tmp_path, monkeypatch):
    """`cvm train all` logs one experiment per task on a tracking server over HTTP,
    registers four models as champion and challenger, and the served pyfunc returns
    probabilities, not labels."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = MlflowClient(mlflow_server)
    for task in TASKS:  # the server is shared by the session: start from an empty registry
        if client.search_registered_models(f"name = 'cvm-{task}'"):
            client.delete_registered_model(f"cvm-{task}")
    result = _train(["all", "--dataset", str(synth_dir), "--as-of", AS_OF, "--experiments", str(experiments_dir)],
                    tmp_path / "home")
    assert result.exit_code == 0, result.output
    for task in TASKS:
        assert f"{task}: as_of {AS_OF}" in result.output

    expected = {
        "churn": ["test_auc", "test_pr_auc", "test_brier", "test_ece", "test_lift_at_10pct",
                  "baseline_recency_test_auc", "baseline_rfm_score_test_auc", "baseline_bgnbd_test_auc"],
        "next-purchase": ["test_auc", "test_orders_mae", "baseline_bgnbd_test_auc",
                          "baseline_bgnbd_test_orders_mae", "baseline_historical_rate_test_orders_mae"],
        "cross-sell": ["test_auc", "test_mean_category_auc", "baseline_popularity_test_auc",
                       "baseline_recent_activity_test_mean_category_auc"],
        "clv": ["test_mae", "test_rmse", "baseline_bgnbd_gamma_gamma_test_mae", "baseline_last_period_test_mae"],
    }
    for task, metrics in expected.items():
        run, runs = _latest_parent_run(client, f"cvm-{task}")
        assert set(metrics) <= set(run.data.metrics), (task, sorted(run.data.metrics))
        params = run.data.params
        assert params["as_of"] == AS_OF and len(params["data_fingerprint"]) == 16
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
        assert len(trials) == 2  # each Optuna trial is a nested run
        artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
        want = {"evaluation/gains.png", "evaluation/feature_importance.png", "evaluation/shap_summary.png",
                "evaluation/evaluation.md", "evaluation/evaluation.csv"}
        if task != "clv":
            want |= {"evaluation/roc.png", "evaluation/pr.png", "evaluation/calibration.png"}
        assert want <= artifacts, (task, artifacts)
        name = f"cvm-{task}"
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == str(client.get_model_version_by_alias(name, "challenger").version) == "1"
        assert champion.tags["as_of"] == AS_OF

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model("models:/cvm-churn@champion")
        example = model.input_example
        assert isinstance(example, pd.DataFrame) and len(example) > 0
        out = model.predict(example)
        p = out["churn_probability"].to_numpy()
        assert ((p >= 0) & (p <= 1)).all() and not np.isin(p, [0.0, 1.0]).all()
    finally:
        mlflow.set_tracking_uri(None)


def _shifted_copy(src: Path, dst: Path, cut: date) -> None:
    """The same dataset with every transaction at or after ``cut`` changed: amounts x10,
    half of them deleted, and a new customer appearing only after the cut."""
    shutil.copytree(src, dst)
    tx_dir = dst / "transactions"
    tx = pd.concat([pd.read_parquet(f) for f in sorted(tx_dir.glob("*.parquet"))], ignore_index=True)
    for f in tx_dir.glob("*.parquet"):
        f.unlink()
    later = (tx["timestamp"] >= pd.Timestamp(cut)).to_numpy()  # synth writes naive timestamps
    assert later.any() and (~later).any()
    tx.loc[later, "amount"] = tx.loc[later, "amount"] * 10
    drop = np.flatnonzero(later)[::2]
    tx = tx.drop(index=drop)
    newcomer = tx[later[tx.index]].head(3).copy()
    newcomer["customer_id"] = "LATE-CUSTOMER"
    newcomer["order_id"] = newcomer["order_id"].astype(str) + "-late"
    tx = pd.concat([tx, newcomer], ignore_index=True)
    tx.to_parquet(tx_dir / "part-0.parquet", index=False)


@pytest.mark.slow  # trains several models: make test, not make test-fast
def test_nothing_at_or_after_as_of_changes_training(synth_dir, experiments_dir, tmp_path, mlflow_home):
    """Backtesting "as if today were as_of": rewriting every later transaction leaves the
    training data, the model and its test metrics identical (and a second run on the
    same data is identical too: seeded)."""
    from training.pipeline import train_task

    as_of = date.fromisoformat(AS_OF)
    changed = tmp_path / "changed"
    _shifted_copy(synth_dir, changed, as_of)
    cfg = load_config(experiments_dir / "churn.yaml")
    results = []
    for i, d in enumerate([synth_dir, changed]):
        home = Home(tmp_path / f"home{i}")
        ds = resolve_dataset(str(d), home)
        engine = DuckDBEngine(threads=2)
        results.append(train_task("churn", ds, as_of, engine, mlflow_home, cfg, cfg.train, register=False))
    a, b = results
    client = MlflowClient()
    params = [client.get_run(r.run_id).data.params for r in results]
    assert params[0]["data_fingerprint"] == params[1]["data_fingerprint"]
    assert a.metrics == b.metrics and a.baselines == b.baselines
    assert a.rows == b.rows


@pytest.mark.slow  # trains several models: make test, not make test-fast
def test_the_gate_keeps_a_better_champion(synth_dir, experiments_dir, tmp_path, mlflow_home):
    """A second version that is worse on the same test snapshot stays challenger; the run
    says why; an equal retrain is promoted (at least as good)."""
    from training.pipeline import train_task

    as_of = date.fromisoformat(AS_OF)
    cfg = load_config(experiments_dir / "churn.yaml")
    ds = resolve_dataset(str(synth_dir), Home(tmp_path / "data"))
    engine = DuckDBEngine(threads=2)
    first = train_task("churn", ds, as_of, engine, mlflow_home, cfg, cfg.train)
    assert first.registration.promoted and first.registration.version == "1"

    weak = cfg.train.model_copy(update={"features": cfg.train.features.model_copy(
        update={"include_only": ["monetary"], "bgnbd": False})})
    second = train_task("churn", ds, as_of, engine, mlflow_home, cfg, weak)
    assert second.metrics["test_auc"] < first.metrics["test_auc"]
    reg = second.registration
    assert not reg.promoted and reg.version == "2"
    assert "champion version 1 kept" in reg.reason
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("cvm-churn", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("cvm-churn", "challenger").version) == "2"
    run = client.get_run(second.run_id)
    assert "kept" in run.data.tags["registration"]

    third = train_task("churn", ds, as_of, engine, mlflow_home, cfg, cfg.train)
    assert third.metrics["test_auc"] == first.metrics["test_auc"]  # seeded: the same model again
    assert third.registration.promoted
    assert str(client.get_model_version_by_alias("cvm-churn", "previous-champion").version) == "1"


def test_task_the_data_cannot_support_is_skipped_with_a_reason(synth_dir, experiments_dir, tmp_path):
    """No category on transactions and no product catalog: cross-sell is skipped with a
    message, the command does not crash."""
    d = tmp_path / "nocat"
    shutil.copytree(synth_dir, d)
    (d / "products.parquet").unlink(missing_ok=True)
    for f in (d / "transactions").glob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.drop([c for c in ("category", "product_id") if c in t.column_names]), f)
    result = _train(["cross-sell", "--dataset", str(d), "--as-of", AS_OF, "--experiments", str(experiments_dir)],
                    tmp_path / "h")
    assert result.exit_code == 0, result.output
    assert "skipped cross-sell" in result.output and "categor" in result.output


def test_as_of_too_early_is_a_clear_error_not_a_crash(synth_dir, experiments_dir, tmp_path):
    result = _train(["churn", "--dataset", str(synth_dir), "--as-of", "2024-02-01",
                     "--experiments", str(experiments_dir)], tmp_path / "h")
    assert result.exit_code == 2
    assert "skipped churn" in result.output and "--as-of" in result.output
    assert "Traceback" not in result.output


def test_unknown_task_is_refused(tmp_path):
    result = _train(["upsell", "--as-of", AS_OF], tmp_path)
    assert result.exit_code == 2
    assert "unknown task 'upsell'" in result.output
