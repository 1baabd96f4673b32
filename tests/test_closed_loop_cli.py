"""``cvm outcomes ingest`` and ``cvm nbo impact`` on a hand-built decision log."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from base.home import Home
from cvm.cli import app
from scoring.decisions import Decision, open_decision_store, to_us

DAY = pd.Timestamp("2026-03-02", tz="UTC")


def _log(home: Home) -> list[Decision]:
    """200 control and 200 policy customers, one decision each on 2026-03-02."""
    store = open_decision_store(None, home, "shop")
    decisions = [Decision(customer_id=f"{arm[0]}{i}", decided_us=to_us(DAY.to_pydatetime()), arm=arm,
                          offer_id=None if arm == "control" else "a", channel=None if arm == "control" else "email",
                          pscore=0.05 if arm == "control" else 0.9, policy_offer_id="a")
                 for arm in ("control", "policy") for i in range(200)]
    store.log(decisions)
    store.close()
    return decisions


def _write(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_ingest_then_impact_on_a_hand_built_log(tmp_path: Path):
    home = Home(tmp_path / "home")
    decisions = _log(home)
    control = [d for d in decisions if d.arm == "control"]
    policy = [d for d in decisions if d.arm == "policy"]
    # 20 of 200 control customers convert, 60 of 200 policy customers: rates 0.10 and 0.30
    rows = [{"outcome_id": f"c-{d.decision_id}", "decision_id": d.decision_id, "type": "convert",
             "timestamp": "2026-03-05T10:00:00Z", "value": "10"} for d in control[:20] + policy[:60]]
    rows += [{"outcome_id": f"i-{d.decision_id}", "decision_id": d.decision_id, "type": "impression",
              "timestamp": "2026-03-02T09:00:00Z", "value": ""} for d in policy]
    good = _write(tmp_path / "outcomes.csv", rows + rows[:5])  # 5 duplicated rows
    runner = CliRunner()
    r = runner.invoke(app, ["outcomes", "ingest", str(good), "--dataset", "shop", "--home", str(home.root)])
    assert r.exit_code == 0, r.output
    assert "285 outcomes, 280 written, 5 duplicates skipped" in r.output
    again = runner.invoke(app, ["outcomes", "ingest", str(good), "--dataset", "shop", "--home", str(home.root)])
    assert "0 written, 285 duplicates skipped" in again.output

    bad = _write(tmp_path / "bad.csv", [
        {"outcome_id": "n1", "decision_id": policy[0].decision_id, "type": "click",
         "timestamp": "2026-03-03T00:00:00Z", "value": ""},
        {"outcome_id": "n2", "decision_id": policy[0].decision_id, "type": "purchase",
         "timestamp": "2026-03-03T00:00:00Z", "value": ""}])
    r = runner.invoke(app, ["outcomes", "ingest", str(bad), "--dataset", "shop", "--home", str(home.root)])
    assert r.exit_code == 2 and "row 3: type" in r.output and "nothing was written" in r.output
    unknown = _write(tmp_path / "unknown.csv", [{"outcome_id": "n3", "decision_id": "no-such-decision",
                                                 "type": "click", "timestamp": "2026-03-03T00:00:00Z",
                                                 "value": ""}])
    r = runner.invoke(app, ["outcomes", "ingest", str(unknown), "--dataset", "shop", "--home", str(home.root)])
    assert r.exit_code == 2 and "no-such-decision" in r.output
    store = open_decision_store(None, home, "shop")
    assert len(store.outcomes()) == 280  # neither refused file wrote anything
    store.close()

    out = tmp_path / "impact"
    r = runner.invoke(app, ["nbo", "impact", "--from", "2026-03-01", "--to", "2026-03-08", "--dataset", "shop",
                            "--out", str(out), "--home", str(home.root)])
    assert r.exit_code == 0, r.output
    payload = json.loads((out / "impact.json").read_text())
    assert payload["randomised"] is True
    lift = next(x for x in payload["lifts"] if x["reference"] == "control" and x["metric"] == "conversion_rate")
    assert lift["test_value"] == 0.3 and lift["reference_value"] == 0.1
    assert abs(lift["absolute"]["estimate"] - 0.2) < 1e-12 and abs(lift["relative"]["estimate"] - 2.0) < 1e-12
    assert lift["absolute"]["low"] > 0 and "Newcombe" in lift["absolute"]["method"]
    assert lift["verdict"] in ("policy better", "not enough data to call")
    assert "control" in r.output and "policy" in r.output and "cvm-impact" in r.output


def test_impact_without_randomised_arms_says_so(tmp_path: Path):
    home = Home(tmp_path / "home")
    r = CliRunner().invoke(app, ["nbo", "impact", "--from", "2017-01-01", "--to", "2017-12-31",
                                 "--dataset", "completejourney", "--out", str(tmp_path / "o"),
                                 "--home", str(home.root)])
    assert r.exit_code == 0, r.output
    assert "no randomised decisions" in r.output
    assert json.loads((tmp_path / "o" / "impact.json").read_text())["randomised"] is False


def test_impact_of_randomised_decisions_without_outcomes_says_there_is_nothing_to_measure(tmp_path: Path):
    home = Home(tmp_path / "home")
    _log(home)  # control and policy decisions, no outcome reported
    r = CliRunner().invoke(app, ["nbo", "impact", "--from", "2026-03-01", "--to", "2026-03-08", "--dataset", "shop",
                                 "--out", str(tmp_path / "o"), "--home", str(home.root)])
    assert r.exit_code == 0, r.output
    payload = json.loads((tmp_path / "o" / "impact.json").read_text())
    assert payload["randomised"] is False and payload["decisions"] == 400 and payload["outcomes"] == 0
    assert "no outcome" in payload["message"]
