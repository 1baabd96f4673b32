"""``cvm train uplift`` end to end on the simulation's log, its assignments by hand, and the
refusal on data without randomised contacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.serving_fixtures import AS_OF, catalog_for
from training.uplift.data import NoRandomisedDataError, from_contacts, from_decision_log, split_by_time

US = 1_000_000
DAY = 86_400 * US
T0 = int(pd.Timestamp("2025-07-01").value // 1000)  # 2025-07-01 00:00 in microseconds


def test_assignments_from_the_log_by_hand():
    """c1: control first (policy would have made offer A), later contacted: control for A.
    c2: exploration shows B, converts 3 days later: treated for B, label 1, value 9.
    c3: policy arm with nothing eligible: neither treated nor control, left out.
    c4: converts 40 days later, outside the 28-day horizon: label 0.
    c5: decided too late for its label window to end before as_of: left out."""
    decisions = pd.DataFrame({
        "decision_id": ["d1", "d1b", "d2", "d3", "d4", "d5"],
        "customer_id": ["c1", "c1", "c2", "c3", "c4", "c5"],
        "decided_us": [T0, T0 + DAY, T0, T0, T0 + 2 * DAY, T0 + 20 * DAY],
        "arm": ["control", "policy", "exploration", "policy", "policy", "policy"],
        "offer_id": [None, "A", "B", None, "A", "A"],
        "policy_offer_id": ["A", "A", "A", None, "A", "A"],
    })
    outcomes = pd.DataFrame({
        "customer_id": ["c2", "c2", "c4"], "type": ["convert", "impression", "convert"],
        "occurred_us": [T0 + 3 * DAY, T0 + DAY, T0 + 42 * DAY], "value": [9.0, None, 5.0]})
    # as_of 2025-08-10: label windows must end by then, so assignments before 2025-07-13
    got = from_decision_log(decisions, outcomes, as_of=date(2025, 8, 10), horizon_days=28)
    assert got["customer_id"].tolist() == ["c1", "c2", "c4"]
    assert got["offer_id"].tolist() == ["A", "B", "A"]
    assert got["treatment"].tolist() == [0, 1, 1]
    assert got["label"].tolist() == [0, 1, 0]
    assert got["value"].tolist() == [0.0, 9.0, 0.0]


def test_assignments_from_randomised_contacts_by_hand():
    """A purchase within 14 days after the contact is a conversion; the first contact of a
    campaign per customer is the assignment; a contact without a group is not randomised."""
    contacts = pd.DataFrame({
        "customer_id": ["a", "a", "b", "c"], "campaign_id": ["K", "K", "K", "K"],
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-02", "2024-01-03"]),
        "group": ["treatment", "treatment", "control", None], "assignment_p": [0.8, 0.8, 0.8, None]})
    tx = pd.DataFrame({"customer_id": ["a", "b", "b"],
                       "timestamp": pd.to_datetime(["2024-01-10", "2024-01-20", "2024-01-03"]),
                       "amount": [12.0, 3.0, 4.0]})
    got = from_contacts(contacts, tx, as_of=date(2024, 3, 1), horizon_days=14)
    assert got["customer_id"].tolist() == ["a", "b"]
    assert got["treatment"].tolist() == [1, 0] and got["assignment_p"].tolist() == [0.8, 0.8]
    # a: bought 9 days after; b: 1 day after (4.0), and 18 days after (outside the window)
    assert got["label"].tolist() == [1, 1] and got["value"].tolist() == [12.0, 4.0]
    with pytest.raises(NoRandomisedDataError, match="group"):
        from_contacts(contacts.drop(columns=["group"]), tx, as_of=date(2024, 3, 1), horizon_days=14)


def test_the_split_is_by_time_and_needs_both_groups_on_each_side():
    days = pd.to_datetime(["2024-01-01"] * 4 + ["2024-01-02"] * 3 + ["2024-01-03"] * 3)
    frame = pd.DataFrame({"assigned_at": days, "treatment": [1, 0, 1, 0, 1, 0, 1, 1, 0, 1]})
    train, valid, split = split_by_time(frame, 0.3)
    assert split == pd.Timestamp("2024-01-03")
    assert train["assigned_at"].max() < valid["assigned_at"].min()
    assert len(train) == 7 and len(valid) == 3
    with pytest.raises(NoRandomisedDataError, match="one day"):
        split_by_time(frame.assign(assigned_at=pd.Timestamp("2024-01-01")), 0.3)


def _catalog(served_home, tmp_path: Path) -> Path:
    import yaml

    catalog = catalog_for(served_home.categories)
    # cross-sell offers only (what the simulated outcome moves), free, so most customers are eligible
    catalog["offers"] = [dict(o, cost=0.0) for o in catalog["offers"] if o["type"] == "cross_sell"]
    catalog["experiment"] = {"salt": "uplift", "control_share": 0.3, "exploration_share": 0.3}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cvm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


@pytest.mark.slow  # trains several models: make test, not make test-fast
def test_train_uplift_on_the_simulation_log(served_home, tmp_path: Path):
    """The simulation's randomised log trains uplift; the run is in MLflow with every
    candidate and baseline, the model is registered as cvm-uplift, and it scores pairs."""
    from base.home import Home
    from batch.simulation import simulate_dataset

    catalog = _catalog(served_home, tmp_path)
    out = tmp_path / "sim"
    simulate_dataset(Home(served_home.home), str(served_home.dataset), date.fromisoformat(AS_OF), 10,
                     catalog_path=catalog, seed=2, visit_rate=0.3, out=out)
    as_of = date.fromisoformat(AS_OF) + timedelta(days=10 + 28 + 1)
    mlflow_db = tmp_path / "mlflow.db"  # the shared home's registry keeps only its four champions
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    small = tmp_path / "uplift.yaml"
    small.write_text("uplift: {n_estimators: 40, n_bags: 3, min_group_rows: 20}\n")
    r = _cli(["train", "uplift", "--dataset", str(served_home.dataset), "--as-of", as_of.isoformat(),
              "--log", str(out / "decisions.sqlite"), "--catalog", str(catalog), "--config", str(small),
              "--home", str(served_home.home)], env)
    assert r.returncode == 0, r.stdout + r.stderr
    printed = " ".join(r.stdout.split())
    assert "chosen by Qini on the later period" in printed and "propensity (baseline)" in printed

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}", registry_uri=f"sqlite:///{mlflow_db}")
    champion = client.get_model_version_by_alias("cvm-uplift", "champion")
    run = client.get_run(champion.run_id)
    for key in ("valid_qini", "valid_auuc", "valid_uplift_at_10", "valid_uplift_at_30", "valid_true_corr",
                "valid_true_mse", "baseline_random_qini", "baseline_propensity_qini", "baseline_response_qini"):
        assert key in run.data.metrics, key
    assert run.data.params["split"] > AS_OF and run.data.params["source"] == "decision log"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"qini_curve.png", "qini_curve.csv", "candidates.csv", "uplift.json"} <= artifacts
    candidates = pd.read_csv(client.download_artifacts(run.info.run_id, "candidates.csv", str(tmp_path)))
    uplift_rows = candidates[candidates["kind"] == "uplift"]
    # 600 customers leave too few control customers per offer for per-offer models: said, not failed
    fit = {f"{lr}/pooled" for lr in ("t", "x", "dr")}
    assert fit <= set(uplift_rows["model"])
    if len(uplift_rows) < 6:
        assert "skipped_candidates" in run.data.tags and "not fit" in printed
    assert run.data.params["chosen"] == uplift_rows.loc[uplift_rows["qini"].idxmax(), "model"]
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "uplift.json", str(tmp_path))).read_text())
    assert summary["counts"]["valid_treated"] > 0

    import mlflow.pyfunc

    uri = client.get_model_version_download_uri("cvm-uplift", champion.version)
    loaded = mlflow.pyfunc.load_model(uri)
    features = pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={AS_OF}").head(20)
    features["offer_id"] = json.loads(Path(client.download_artifacts(
        run.info.run_id, "features.json", str(tmp_path))).read_text())["offers"][0]
    scores = loaded.predict(features)
    assert list(scores.columns) == ["uplift", "uplift_low", "uplift_high"] and len(scores) == 20
    ok = scores.dropna()
    assert ((ok["uplift_low"] <= ok["uplift_high"]) & ok["uplift"].between(-1, 1)).all()
    _champion_scores_in_batch_and_service(served_home, catalog, f"sqlite:///{mlflow_db}", str(champion.version),
                                          tmp_path)


def _champion_scores_in_batch_and_service(served_home, catalog_path: Path, uplift_uri: str, version: str,
                                          tmp_path: Path) -> None:
    """The registered champion, loaded as the batch and the service load it, ranks offers
    with ``propensity: uplift`` on uplift x value x lever - cost; both give the same uplift."""
    import numpy as np
    import yaml

    from batch.score import score_snapshot
    from features.online_store import SQLiteOnlineStore
    from scoring.catalog import parse_catalog
    from scoring.champions import RegistrySource
    from scoring.decisions import SQLiteDecisionStore
    from serving.engine import build_state, recommend

    up = RegistrySource(uplift_uri).uplift()
    assert up is not None and up.version == version
    champions = RegistrySource(f"sqlite:///{served_home.home / 'mlflow' / 'mlflow.db'}").champions()
    raw = yaml.safe_load(catalog_path.read_text())
    raw["offers"] = [dict(o, propensity="uplift") for o in raw["offers"]]
    catalog = parse_catalog(raw)
    snapshot = pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={AS_OF}")
    out = score_snapshot(snapshot, champions, catalog, date.fromisoformat(AS_OF), window_days=365, uplift=up)
    offers = out.offers
    assert len(offers) > 0
    assert np.isfinite(offers["uplift"]).all() and (offers["uplift_high"] >= 0).all()
    assert (offers["uplift_low"] <= offers["uplift"]).all() and (offers["uplift"] <= offers["uplift_high"]).all()
    lever = offers["offer_id"].map({o.id: o.lever for o in catalog.offers})
    cost = offers["offer_id"].map({o.id: o.cost for o in catalog.offers})
    np.testing.assert_allclose(offers["expected_value"], offers["uplift"] * offers["value"] * lever - cost,
                               rtol=1e-9)
    state = build_state("x", champions, SQLiteOnlineStore(served_home.home / "online" / served_home.name), catalog,
                        uplift=up)
    assert state.model_versions["uplift"] == version
    decisions = SQLiteDecisionStore(tmp_path / "recommend.sqlite")
    batch = offers.set_index(["customer_id", "offer_id"])["uplift"]
    seen = 0
    try:
        for cid in snapshot["customer_id"].astype(str).head(60):
            answer = recommend(state, cid, decisions=decisions)
            for o in answer["offers"]:
                seen += 1
                assert o["basis"] == "uplift" and o["uplift_interval"][0] <= o["uplift"] <= o["uplift_interval"][1]
                assert any(r.startswith("ranked on uplift") for r in o["reasons"])
                if (cid, o["offer_id"]) in batch.index:
                    assert o["uplift"] == pytest.approx(batch[(cid, o["offer_id"])], abs=1e-6)
            for why in (answer.get("no_offer_reasons") or {}).values():
                assert why != "no uplift model for this offer (cvm train uplift)"
    finally:
        decisions.close()
    assert seen > 0


def test_train_uplift_without_randomised_contacts_exits_2(served_home, tmp_path: Path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    r = _cli(["train", "uplift", "--dataset", str(served_home.dataset), "--as-of", "2025-09-01",
              "--log", str(tmp_path / "empty.sqlite"), "--home", str(served_home.home)], env)
    assert r.returncode == 2, r.stdout + r.stderr
    text = " ".join((r.stdout + r.stderr).split())
    assert "nothing randomised to learn uplift from" in text and "no control-arm decision" in text
    assert "no `group` column" in text


def test_a_per_offer_model_gives_nan_for_an_offer_it_has_no_model_for():
    """Offer B had too few assignments for a model: its rows are unknown (NaN), never a guess,
    for the estimate and for both ends of the interval; offer A's rows are scored."""
    import numpy as np

    from training.encode import FeatureEncoder
    from training.uplift.learners import TLearner
    from training.uplift.model import UpliftModel

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=400)})
    t, y = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    encoder = FeatureEncoder(["x"]).fit(frame)
    learner = TLearner(params={"n_estimators": 5}, n_bags=2).fit(frame.astype("float32"), t, y)
    model = UpliftModel("t", "per_offer", ["x"], encoder, ["A", "B"], models={"A": learner})
    rows = frame.head(4).assign(offer_id=["B", "B", "A", "B"])
    low, high = model.predict_interval(rows)
    est = model.predict(rows)
    assert np.isnan(est[[0, 1, 3]]).all() and np.isfinite(est[2])
    assert np.isnan(low[[0, 1, 3]]).all() and np.isnan(high[[0, 1, 3]]).all() and low[2] <= high[2]
    only_b = model.predict_interval(rows.iloc[[0, 1]])
    assert all(np.isnan(a).all() for a in only_b)
