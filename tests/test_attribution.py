"""Conversions attributed from transactions: the rule by hand, then through cvm nbo impact."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from typer.testing import CliRunner

from scoring.attribution import attribute_conversions

T = pd.Timestamp


def _decisions() -> pd.DataFrame:
    return pd.DataFrame({
        "decision_id": ["dA", "dB", "dC", "dN"], "customer_id": ["A", "B", "C", "A"],
        "arm": ["policy", "control", "exploration", "policy"],
        "offer_id": ["xs-dairy", None, "xs-grocery", None], "policy_offer_id": ["xs-dairy", "xs-bakery", "xs-dairy",
                                                                                 None],
        "timestamp": [T("2024-02-25", tz="UTC")] * 4})


def test_the_rule_by_hand():
    purchases = pd.DataFrame({
        "customer_id": ["A", "A", "A", "B", "C", "C"],
        "category": ["dairy", "dairy", "dairy", "bakery", "grocery", "grocery"],
        "timestamp": [T("2024-02-20", tz="UTC"), T("2024-02-29 23:59", tz="UTC"), T("2024-03-01", tz="UTC"),
                      T("2024-02-01", tz="UTC"), T("2024-03-01 08:00", tz="UTC"), T("2024-03-30", tz="UTC")],
        "amount": [99.0, 30.0, 100.0, 10.0, 40.0, 7.0]})
    out = attribute_conversions(_decisions(), purchases, {"xs-dairy": "dairy", "xs-grocery": "grocery",
                                                          "xs-bakery": "bakery"}, horizon_days=28)
    got = out.set_index("decision_id")
    # A (policy, dairy): the purchase before the decision does not count; 30 + 100 within 28 days,
    # first at 02-29 23:59. B (control, would-be bakery): bought only before. C (exploration, shown
    # grocery): 40 on 03-01; the 03-30 purchase is after 02-25 + 28 days = 03-24. dN: no offer at all.
    assert sorted(got.index) == ["dA", "dC"]
    assert got.loc["dA", "value"] == 130.0 and got.loc["dA", "timestamp"] == T("2024-02-29 23:59", tz="UTC")
    assert got.loc["dC", "value"] == 40.0
    assert (got["type"] == "convert").all() and got.loc["dA", "outcome_id"] == "attributed-dA"


def test_impact_with_conversions_attributed_from_the_tiny_dataset(tiny_dataset, tmp_path):
    from base.home import Home
    from cvm.cli import app
    from scoring.decisions import Decision, open_decision_store, to_us

    catalog = {"channels": ["email"], "offers": [
        {"id": f"xs-{c}", "name": c, "type": "cross_sell", "target_category": c,
         "value": {"model": "category_spend"}, "channels": ["email"]} for c in ("grocery", "dairy", "bakery")]}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    home = Home(tmp_path / "home")
    when = to_us(T("2024-02-25").to_pydatetime())
    store = open_decision_store(None, home, "tiny")
    store.log([Decision("A", when, "policy", "xs-dairy", "email", 0.9, "xs-dairy", decision_id="dA"),
               Decision("B", when, "control", None, None, 0.05, "xs-bakery", decision_id="dB"),
               Decision("C", when, "policy", "xs-grocery", "email", 0.9, "xs-grocery", decision_id="dC")])
    store.close()
    out = tmp_path / "impact"
    r = CliRunner().invoke(app, ["nbo", "impact", "--from", "2024-02-01", "--to", "2024-03-01", "--dataset",
                                 str(tiny_dataset), "--attribute", "--catalog", str(path), "--min-customers", "1",
                                 "--out", str(out), "--home", str(home.root)])
    assert r.exit_code == 0, r.output
    payload = json.loads((out / "impact.json").read_text())
    assert payload["randomised"] is True and "target category" in payload["conversions"]
    arms = {a["arm"]: a for a in payload["arms"]}
    # A bought dairy on 02-29 (30) and 03-01 (100); C grocery on 03-01 (40); B no bakery after 02-25
    assert arms["policy"]["converters"] == 2 and arms["policy"]["value"] == 170.0
    assert arms["control"]["converters"] == 0 and arms["control"]["customers"] == 1
