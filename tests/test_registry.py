"""Champion/challenger registration, promotion by hand and rollback; `cvm models` on top of it.

Every test gets its own SQLite store (``mlflow_home``); a migrated empty database is made
once per module and copied in, because creating MLflow's schema costs seconds per store.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from base.home import Home
from tests.mlflow_fixtures import tiny_pyfunc_model
from training import registry as R
from training import tracking

EXPERIMENT = "registry-tests"


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its schema created and nothing else."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@dataclass
class Store:
    home: Home
    client: MlflowClient
    experiment: str

    def model(self, value: float) -> str:
        """Log a constant model in this store's experiment; its runs:/ URI."""
        return tiny_pyfunc_model(value, experiment_id=self.experiment)

    def aliases(self, name: str = "cvm-churn") -> dict[str, str]:
        return {a: str(v) for a, v in self.client.get_registered_model(name).aliases.items()}

    def history(self, name: str = "cvm-churn") -> list[str]:
        raw = self.client.get_registered_model(name).tags[R.HISTORY_TAG]
        return [h["version"] for h in json.loads(raw)]

    def tags(self, version: str, name: str = "cvm-churn") -> dict[str, str]:
        return self.client.get_model_version(name, version).tags


@pytest.fixture
def store(mlflow_home: Home, empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.chdir(tmp_path)  # anything written to ./mlruns would show up here
    db = Path(mlflow_home.mlflow_tracking_uri().removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True)
    shutil.copy(empty_store, db)
    client = tracking.configure(mlflow_home)
    return Store(mlflow_home, client, tracking.experiment_id(client, mlflow_home, EXPERIMENT))


def _predict(uri: str) -> float:
    return float(mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"x": [1]}))["score"].iloc[0])


class Calls:
    """A champion_value callback that records what it was asked and answers ``value``."""

    def __init__(self, value):
        self.value, self.uris = value, []

    def __call__(self, uri: str):
        self.uris.append(uri)
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


# ---------------------------------------------------------------------------- the gate
def test_first_version_becomes_champion_and_challenger(store, tmp_path):
    ask = Calls(0.5)
    d = R.register_and_gate(store.client, "churn", store.model(0.11), 0.7, ask,
                            tags={"as_of": "2024-03-01", "horizon_days": "30"})
    assert (d.name, d.version, d.promoted) == ("cvm-churn", "1", True)
    assert d.champion_version is None and d.champion_value is None
    assert "first version" in d.reason and "0.7" in d.reason
    assert ask.uris == []  # nothing to compare with
    assert store.aliases() == {"champion": "1", "challenger": "1"}
    assert store.history() == ["1"]
    tags = store.tags("1")
    assert tags["test_auc"] == "0.7" and tags["gate_decision"] == "promoted" and tags["as_of"] == "2024-03-01"
    assert _predict("models:/cvm-churn@champion") == pytest.approx(0.11)
    # artifacts went under CVM_HOME, not into the working directory
    assert not (tmp_path / "mlruns").exists()
    assert any((store.home.mlflow_artifacts() / EXPERIMENT).rglob("MLmodel"))


def test_worse_version_stays_challenger(store):
    R.register_and_gate(store.client, "churn", store.model(0.1), 0.70, Calls(None))
    # the champion, measured on the new snapshot, scores 0.72; the new model 0.6
    ask = Calls(0.72)
    d = R.register_and_gate(store.client, "churn", store.model(0.2), 0.6, ask)
    assert ask.uris == ["models:/cvm-churn@champion"]
    assert (d.version, d.promoted, d.champion_version, d.champion_value) == ("2", False, "1", 0.72)
    assert "0.6" in d.reason and "0.72" in d.reason and "champion version 1 kept" in d.reason
    assert "higher is better" in d.reason
    assert store.aliases() == {"champion": "1", "challenger": "2"}  # no previous-champion
    assert store.history() == ["1"]
    tags = store.tags("2")
    assert tags["gate_decision"] == "champion_kept" and tags["gate_champion_version"] == "1"
    assert float(tags["gate_champion_value"]) == 0.72 and tags["gate_reason"] == d.reason
    assert _predict("models:/cvm-churn@champion") == pytest.approx(0.1)
    assert _predict("models:/cvm-churn@challenger") == pytest.approx(0.2)


def test_equal_or_better_version_is_promoted(store):
    R.register_and_gate(store.client, "churn", store.model(0.1), 0.70, Calls(None))
    tie = R.register_and_gate(store.client, "churn", store.model(0.2), 0.70, Calls(0.70))
    assert tie.promoted and ">=" in tie.reason
    assert store.aliases() == {"champion": "2", "challenger": "2", "previous-champion": "1"}
    better = R.register_and_gate(store.client, "churn", store.model(0.3), 0.80, Calls(0.75))
    assert better.promoted and better.champion_version == "2" and better.champion_value == 0.75
    assert store.aliases() == {"champion": "3", "challenger": "3", "previous-champion": "2"}
    assert store.history() == ["1", "2", "3"]
    assert _predict("models:/cvm-churn@champion") == pytest.approx(0.3)


def test_clv_lower_mae_is_better(store):
    R.register_and_gate(store.client, "clv", store.model(0.1), 10.0, Calls(None))
    worse = R.register_and_gate(store.client, "clv", store.model(0.2), 12.0, Calls(11.0))
    assert not worse.promoted and "lower is better" in worse.reason and "test_mae 12 > " in worse.reason
    assert store.aliases("cvm-clv")["champion"] == "1"
    tie = R.register_and_gate(store.client, "clv", store.model(0.3), 11.0, Calls(11.0))
    assert tie.promoted and "<=" in tie.reason
    better = R.register_and_gate(store.client, "clv", store.model(0.4), 9.0, Calls(10.5))
    assert better.promoted
    assert store.aliases("cvm-clv") == {"champion": "4", "challenger": "4", "previous-champion": "3"}
    assert store.tags("4", "cvm-clv")["test_mae"] == "9.0"


def test_champion_that_cannot_be_evaluated_is_kept(store):
    R.register_and_gate(store.client, "churn", store.model(0.1), 0.5, Calls(None))
    for version, answer in (("2", RuntimeError("feature set changed")), ("3", None), ("4", math.nan)):
        d = R.register_and_gate(store.client, "churn", store.model(0.2), 0.99, Calls(answer))
        assert (d.version, d.promoted, d.champion_value) == (version, False, None)
        assert "cannot be evaluated" in d.reason and "promote by hand" in d.reason
        assert f"cvm models promote churn {version}" in d.reason
        assert store.tags(version)["gate_champion_value"] == ""
    assert store.aliases() == {"champion": "1", "challenger": "4"}


def test_new_model_with_nan_metric_is_not_promoted(store):
    R.register_and_gate(store.client, "churn", store.model(0.1), 0.5, Calls(None))
    d = R.register_and_gate(store.client, "churn", store.model(0.2), math.nan, Calls(0.5))
    assert not d.promoted and "nan" in d.reason
    assert store.aliases()["champion"] == "1"


# ---------------------------------------------------------------------------- by hand
def test_promote_by_hand_and_rollback_walk_the_history(store):
    for value, metric in ((0.1, 0.7), (0.2, 0.6), (0.3, 0.5)):
        R.register_and_gate(store.client, "churn", store.model(value), metric, Calls(0.9))
    assert store.aliases()["champion"] == "1"

    d = R.promote(store.client, "cvm-churn", "v2", reason="better on the holdout")
    assert d.promoted and d.version == "2" and d.champion_version == "1"
    assert d.reason == "promoted by hand: better on the holdout (champion was version 1)"
    assert (d.new_value, d.champion_value) == (0.6, 0.7)  # from the versions' metric tags
    R.promote(store.client, "churn", "3")
    assert store.aliases() == {"champion": "3", "challenger": "3", "previous-champion": "2"}
    assert store.history() == ["1", "2", "3"]

    again = R.promote(store.client, "churn", "3")
    assert not again.promoted and "already the champion" in again.reason
    assert store.history() == ["1", "2", "3"]

    back = R.rollback(store.client, "churn")
    assert (back.version, back.champion_version, back.promoted) == ("2", "3", True)
    assert back.reason == "rollback: champion version 3 -> version 2"
    assert store.aliases() == {"champion": "2", "challenger": "3", "previous-champion": "1"}
    assert "champion returned to version 2" in store.tags("3")["rolled_back"]
    assert _predict("models:/cvm-churn@champion") == pytest.approx(0.2)

    R.rollback(store.client, "churn")
    assert store.aliases() == {"champion": "1", "challenger": "3"}
    assert store.history() == ["1"]
    with pytest.raises(R.RegistryError, match="no previous champion to roll back to"):
        R.rollback(store.client, "churn")
    assert store.aliases()["champion"] == "1"


def test_gate_after_rollback_continues_the_history(store):
    R.register_and_gate(store.client, "churn", store.model(0.1), 0.6, Calls(None))
    R.register_and_gate(store.client, "churn", store.model(0.2), 0.7, Calls(0.6))
    R.rollback(store.client, "churn")
    assert store.aliases() == {"champion": "1", "challenger": "2"}
    R.register_and_gate(store.client, "churn", store.model(0.3), 0.8, Calls(0.6))
    assert store.aliases() == {"champion": "3", "challenger": "3", "previous-champion": "1"}
    assert store.history() == ["1", "3"]
    R.rollback(store.client, "churn")
    assert store.aliases()["champion"] == "1"


def test_promote_checks_the_version(store):
    R.register_and_gate(store.client, "churn", store.model(0.1), 0.6, Calls(None))
    R.register_and_gate(store.client, "churn", store.model(0.2), 0.5, Calls(0.6))
    with pytest.raises(R.RegistryError, match=r"cvm-churn has no version 9 \(versions: 1, 2\)"):
        R.promote(store.client, "churn", "9")
    for bad in ("latest", "²", "-1", ""):
        with pytest.raises(R.RegistryError, match="not a version number"):
            R.promote(store.client, "churn", bad)
    # "02" is version 2, not a new champion that is also its own previous champion
    d = R.promote(store.client, "churn", "02")
    assert d.version == "2"
    assert store.aliases() == {"champion": "2", "challenger": "2", "previous-champion": "1"}
    assert not R.promote(store.client, "churn", "002").promoted
    assert store.history() == ["1", "2"]
    with pytest.raises(R.RegistryError, match="no registered model cvm-clv"):
        R.promote(store.client, "clv", "1")
    with pytest.raises(R.RegistryError, match="no registered model cvm-clv"):
        R.rollback(store.client, "clv")


@pytest.mark.parametrize("call", [
    lambda: R.register_and_gate(None, "upsell", "runs:/x/model", 0.5, lambda uri: 0.5),
    lambda: R.promote(None, "cvm-upsell", "1"),
    lambda: R.rollback(None, "upsell"),
    lambda: R.list_versions(None, ["churn", "upsell"]),
])
def test_unknown_task_is_a_registry_error(call):
    with pytest.raises(R.RegistryError, match="unknown task or model .*upsell.*choose one of churn"):
        call()
    assert issubclass(R.RegistryError, ValueError)


def test_resolve_accepts_tasks_and_registered_names():
    assert R.resolve("next-purchase") == ("next-purchase", "cvm-next-purchase")
    assert R.resolve("cvm-cross-sell") == ("cross-sell", "cvm-cross-sell")


def test_list_versions_newest_first_with_aliases_and_data_tags(store):
    assert R.list_versions(store.client) == []
    R.register_and_gate(store.client, "churn", store.model(0.1), 0.7, Calls(None), tags={"as_of": "2024-01-01"})
    R.register_and_gate(store.client, "churn", store.model(0.2), 0.6, Calls(0.7), tags={"as_of": "2024-02-01"})
    R.register_and_gate(store.client, "clv", store.model(0.3), 12.5, Calls(None))
    rows = R.list_versions(store.client)
    assert [(r["name"], r["version"]) for r in rows] == [("cvm-churn", "2"), ("cvm-churn", "1"), ("cvm-clv", "1")]
    churn2, churn1, clv1 = rows
    assert churn2["aliases"] == ["challenger"] and churn1["aliases"] == ["champion"]
    assert (churn2["metric"], churn2["value"], churn2["as_of"]) == ("test_auc", 0.6, "2024-02-01")
    assert churn2["gate_decision"] == "champion_kept" and churn1["gate_decision"] == "promoted"
    assert (clv1["metric"], clv1["value"]) == ("test_mae", 12.5)
    assert [r["name"] for r in R.list_versions(store.client, ["clv"])] == ["cvm-clv"]


def test_client_store_registers_in_the_clients_store_and_restores_globals(store, tmp_path):
    uri = store.client.tracking_uri
    model = store.model(0.4)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)
    mlflow.set_registry_uri(elsewhere)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        d = R.register_and_gate(client, "churn", model, 0.7, Calls(None))
        assert mlflow.get_tracking_uri() == elsewhere and mlflow.get_registry_uri() == elsewhere
    finally:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    assert d.version == "1" and store.aliases()["champion"] == "1"
    assert not (tmp_path / "elsewhere.db").exists()


def test_configure_keeps_experiments_under_cvm_home(store, monkeypatch):
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ  # configure() sets MLflow's globals, not the environment
    assert store.client.tracking_uri == store.home.mlflow_tracking_uri()
    exp = store.client.get_experiment(store.experiment)
    assert exp.artifact_location == (store.home.mlflow_artifacts() / EXPERIMENT).as_uri()
    # a deleted experiment keeps its name taken: experiment_id brings it back instead of failing
    store.client.delete_experiment(store.experiment)
    assert tracking.experiment_id(store.client, store.home, EXPERIMENT) == store.experiment
    assert store.client.get_experiment(store.experiment).lifecycle_stage == "active"


@pytest.mark.parametrize(("uri", "server"), [
    ("http://127.0.0.1:5000", True), ("https://mlflow.example.org", True), ("databricks", True),
    ("databricks://profile", True), ("databricks-uc", True), ("sqlite:///tmp/x.db", False),
    ("file:///tmp/mlruns", False), ("/tmp/mlruns", False), ("mlruns", False),
])
def test_is_server_uri(uri, server):
    assert tracking.is_server_uri(uri) is server


# ---------------------------------------------------------------------------- a real tracking server
@pytest.mark.server
def test_registry_against_a_real_tracking_server(mlflow_home, mlflow_server, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = tracking.configure(mlflow_home)
    assert client.tracking_uri == mlflow_server and tracking.is_server_uri(client.tracking_uri)
    exp = tracking.experiment_id(client, mlflow_home, EXPERIMENT)
    first = R.register_and_gate(client, "next-purchase", tiny_pyfunc_model(0.25, experiment_id=exp), 0.61,
                                Calls(None))
    second = R.register_and_gate(client, "next-purchase", tiny_pyfunc_model(0.75, experiment_id=exp), 0.64,
                                 Calls(0.62))
    assert first.promoted and second.promoted
    assert int(second.version) == int(first.version) + 1
    aliases = {a: str(v) for a, v in client.get_registered_model("cvm-next-purchase").aliases.items()}
    assert aliases == {"champion": second.version, "challenger": second.version,
                       "previous-champion": first.version}
    # artifacts are proxied by the server: the model loads through it, nothing lands under CVM_HOME
    assert _predict("models:/cvm-next-purchase@champion") == pytest.approx(0.75)
    assert not mlflow_home.mlflow_artifacts().exists()
    assert not (tmp_path / "mlruns").exists()
    back = R.rollback(client, "next-purchase")
    assert back.version == first.version
    assert _predict("models:/cvm-next-purchase@champion") == pytest.approx(0.25)


# ---------------------------------------------------------------------------- cvm models
runner = CliRunner()


def _cli(*args: str):
    from cvm.cli import app

    return runner.invoke(app, ["models", *args])


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit(2), not an escaped error
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_list_promote_rollback(store, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    _one_line_error(_cli("list"), "no registered model yet", "cvm train")

    R.register_and_gate(store.client, "churn", store.model(0.1), 0.7, Calls(None), tags={"as_of": "2024-03-01"})
    R.register_and_gate(store.client, "churn", store.model(0.2), 0.6, Calls(0.7))
    result = _cli("list")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "cvm-churn" in line]
    assert len(lines) == 2
    assert " 2 " in lines[0] and "challenger" in lines[0] and "test_auc 0.6000" in lines[0]
    assert " 1 " in lines[1] and "champion" in lines[1] and "2024-03-01" in lines[1]
    assert "test_auc 0.7000" in lines[1]

    result = _cli("promote", "churn", "v2", "--reason", "manual check")
    assert result.exit_code == 0, result.output
    assert "cvm-churn version 2: promoted by hand: manual check (champion was version 1)" in result.stdout
    assert store.aliases() == {"champion": "2", "challenger": "2", "previous-champion": "1"}

    result = _cli("rollback", "cvm-churn")
    assert result.exit_code == 0, result.output
    assert "cvm-churn: rollback: champion version 2 -> version 1" in result.stdout
    assert store.aliases() == {"champion": "1", "challenger": "2"}

    _one_line_error(_cli("rollback", "churn"), "no previous champion")
    _one_line_error(_cli("promote", "churn", "7"), "cvm-churn has no version 7", "versions: 1, 2")
    _one_line_error(_cli("promote", "upsell", "1"), "unknown task or model 'upsell'")
    _one_line_error(_cli("list", "--task", "clv"), "no registered model for clv")
    assert store.aliases()["champion"] == "1"
