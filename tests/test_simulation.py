"""The simulation: its truth arithmetic by hand, and on a served synthetic home the
measured lift's 95 % interval containing the true lift (one seed)."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.serving_fixtures import AS_OF, catalog_for


def test_convert_probability_by_hand():
    from batch.simulation import convert_probability

    p_control = np.array([[0.1, 0.2], [0.5, 0.0]])
    p_treated = np.array([[0.4, 0.1], [0.5, 0.3]])
    shown = np.array([[True, False], [False, False]])
    # customer 0: treated in the 1st category only: 1 - (1 - 0.4)(1 - 0.2) = 0.52
    # customer 1: nothing shown: 1 - (1 - 0.5)(1 - 0) = 0.5
    assert convert_probability(p_control, p_treated, shown) == pytest.approx([0.52, 0.5])


def test_golden_to_person_takes_the_majority_of_the_records():
    from batch.simulation import golden_to_person

    profile_map = pd.DataFrame({"source_system": ["pos", "web", "crm", "pos"],
                                "source_id": ["r1", "r2", "r3", "r4"], "customer_id": ["G1", "G1", "G1", "G2"]})
    records = pd.DataFrame({"source_system": ["pos", "web", "crm", "pos"], "customer_id": ["r1", "r2", "r3", "r4"],
                            "person_id": [7, 7, 9, 3]})
    assert golden_to_person(profile_map, records).to_dict() == {"G1": 7, "G2": 3}


def _sim_catalog(served_home, tmp_path):
    catalog = catalog_for(served_home.categories)
    # cross-sell offers only: the simulated outcome (buying in an offered category) is what they move
    catalog["offers"] = [o for o in catalog["offers"] if o["type"] == "cross_sell"]
    # more customers held out than in production, so 600 customers give a usable control group
    catalog["experiment"] = {"salt": "sim", "control_share": 0.3, "exploration_share": 0.2}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


def test_the_simulation_recovers_the_true_lift(served_home, tmp_path):
    from typer.testing import CliRunner

    from cvm.cli import app

    path = _sim_catalog(served_home, tmp_path)
    out = tmp_path / "sim"
    r = CliRunner().invoke(app, ["simulate", "--dataset", str(served_home.dataset), "--from", AS_OF, "--days", "14",
                                 "--visit-rate", "0.3", "--seed", "1", "--catalog", str(path), "--out", str(out),
                                 "--home", str(served_home.home)])
    assert r.exit_code == 0, r.output
    result = json.loads((out / "simulation.json").read_text())
    assert result["start"] == AS_OF and result["days"] == 14
    # 1 - 0.7^14 = 99.3 % of the snapshot's customers visit at least once
    rows = len(pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={AS_OF}",
                               columns=["customer_id"]))
    assert 0.97 * rows <= result["customers"] <= rows and result["decisions"] > result["customers"]
    arms = result["arms"]
    assert arms["control"] > 100 and arms["exploration"] > 60 and arms["policy"] > 200
    measured = result["measured"]["conversion_rate.policy_vs_control"]
    assert measured["covered"], measured
    assert measured["low"] <= measured["true"] <= measured["high"]
    assert measured["true"] > 0  # the synthetic world's offers help on average
    assert "Simulation: 14 days" in r.output and "simulation.json" in r.output
    # the log is the simulation's own: the service's (under the home) is untouched
    assert (out / "decisions.sqlite").exists()
    assert not (served_home.home / "decisions" / served_home.name / "decisions.sqlite").exists() or \
        _no_simulated(served_home)
    assert date.fromisoformat(result["start"]) == date.fromisoformat(AS_OF)


def _no_simulated(served_home) -> bool:
    from base.home import Home
    from scoring.decisions import open_decision_store

    store = open_decision_store(None, Home(served_home.home), served_home.name)
    try:
        return (store.decisions()["source"] != "simulation").all()
    finally:
        store.close()


@pytest.mark.server
def test_the_simulation_drives_a_running_service_over_http(served_home, tmp_path, monkeypatch):
    """`cvm simulate --url`: the same loop through `cvm serve --simulation-clock`; a server
    without the flag refuses a client-set decision time."""
    import dataclasses

    import httpx
    from typer.testing import CliRunner

    from cvm.cli import app
    from scoring.decisions import SQLiteDecisionStore
    from tests.serving_fixtures import API_KEY, start_server, stop_server

    path = _sim_catalog(served_home, tmp_path)
    served = dataclasses.replace(served_home, catalog=path)
    log_path = tmp_path / "server-decisions.sqlite"
    server = start_server(served, tmp_path / "sim-server.log", reload_seconds=0,
                          extra_env={"CVM_DECISIONS_URL": f"sqlite:///{log_path}"}, args=["--simulation-clock"])
    try:
        monkeypatch.setenv("CVM_API_KEYS", API_KEY)
        out = tmp_path / "sim-http"
        r = CliRunner().invoke(app, ["simulate", "--dataset", str(served_home.dataset), "--from", AS_OF,
                                     "--days", "7", "--visit-rate", "0.2", "--seed", "2", "--catalog", str(path),
                                     "--out", str(out), "--url", server.url, "--home", str(served_home.home)])
        assert r.exit_code == 0, r.output
    finally:
        stop_server(server)
    result = json.loads((out / "simulation.json").read_text())
    assert result["decided_by"] == server.url and result["decisions"] > 300
    store = SQLiteDecisionStore(log_path)  # every simulated decision is in the server's log, at simulated times
    logged = store.decisions()
    store.close()
    assert len(logged) == result["decisions"]
    days = pd.to_datetime(logged["decided_us"], unit="us").dt.date.astype(str)
    assert days.min() == AS_OF and days.nunique() == 7
    assert result["measured"]["conversion_rate.policy_vs_control"]["covered"]

    plain = start_server(served_home, tmp_path / "plain.log", reload_seconds=0,
                         extra_env={"CVM_DECISIONS_URL": f"sqlite:///{tmp_path / 'plain.sqlite'}"})
    try:
        with httpx.Client(base_url=plain.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
            refused = c.post("/recommend", json={"customer_id": "x", "at": "2025-07-02T10:00:00Z"})
    finally:
        stop_server(plain)
    assert refused.status_code == 400 and "simulation-clock" in refused.json()["error"]
