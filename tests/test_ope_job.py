"""``cvm nbo evaluate --log FROM..TO`` end to end on a simulated log: the estimates are the
textbook formulas on the log's own rows, the synthetic truth sits beside them, and candidates
the log cannot support say so."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.serving_fixtures import AS_OF, catalog_for

DAY_US = 86_400_000_000


def _catalogs(served_home, tmp_path: Path) -> tuple[Path, Path]:
    """The logging catalog (cross-sell offers, free, 30 % control and 30 % exploration) and a
    candidate catalog that adds an offer the log never presented."""
    catalog = catalog_for(served_home.categories)
    catalog["offers"] = [dict(o, cost=0.0) for o in catalog["offers"] if o["type"] == "cross_sell"]
    catalog["experiment"] = {"salt": "ope-test", "control_share": 0.3, "exploration_share": 0.3}
    logging = tmp_path / "catalog.yaml"
    logging.write_text(yaml.safe_dump(catalog, sort_keys=False))
    other = dict(catalog, version="candidate")
    new = dict(catalog["offers"][0], id="xs-new", name="A new offer", lever=5.0)
    other["offers"] = [*catalog["offers"], new]
    candidate = tmp_path / "bigger.yaml"
    candidate.write_text(yaml.safe_dump(other, sort_keys=False))
    return logging, candidate


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CVM_DECISIONS_URL")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return subprocess.run([sys.executable, "-m", "cvm.cli", *args, "--home", str(home)], capture_output=True,
                          text=True, env=env, timeout=600, check=False)


@pytest.fixture(scope="module")
def simulated(served_home, tmp_path_factory):
    """One simulated day on which every customer is decided once (so the truth is exact)."""
    from base.home import Home
    from batch.simulation import simulate_dataset

    tmp = tmp_path_factory.mktemp("ope")
    logging, candidate = _catalogs(served_home, tmp)
    out = tmp / "sim"
    simulate_dataset(Home(served_home.home), str(served_home.dataset), date.fromisoformat(AS_OF), 1,
                     catalog_path=logging, seed=4, visit_rate=1.0, out=out)
    return tmp, logging, candidate, out / "decisions.sqlite"


def _log(db: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with sqlite3.connect(db) as con:
        return (pd.read_sql("SELECT * FROM decisions", con), pd.read_sql("SELECT * FROM outcomes", con))


def test_off_policy_estimates_are_the_formulas_on_the_log(served_home, simulated):
    tmp, logging, candidate, db = simulated
    window = f"{AS_OF}..{date.fromisoformat(AS_OF) + timedelta(days=1)}"
    out = tmp / "ope"
    r = _cli(["nbo", "evaluate", "--log", window, "--dataset", str(served_home.dataset), "--catalog", str(logging),
              "--decisions", f"sqlite:///{db}", "--bootstrap", "200", "--out", str(out),
              "--policy", "current", "--policy", "no-offer", "--policy", "random", "--policy", "propensity",
              "--policy", "most-popular", "--policy", str(candidate)], served_home.home)
    assert r.returncode == 0, r.stdout + r.stderr
    printed = " ".join(r.stdout.split())
    assert "experiment cvm-ope" in printed
    payload = json.loads((out / "ope.json").read_text())
    # the contexts are rebuilt as the simulation saw them: the engine re-run makes the logged policy's choices
    assert payload["context_agreement"] == 1.0
    table = pd.DataFrame(payload["estimates"]).set_index(["candidate", "method"])
    # the built-in candidates choose among what the logging engine could present; the bigger catalog's
    # new offer was never presentable, and the note says how much of its choices that is
    unsupported = table["unsupported_share"].groupby(level=0).first()
    assert (unsupported.drop("catalog:bigger") == 0).all() and unsupported["catalog:bigger"] > 0
    assert [n.split(":")[0] for n in payload["notes"]] == ["catalog"]

    # by hand from the raw log: one decision per customer, reward = a convert within 28 days
    decisions, outcomes = _log(db)
    assert payload["rounds"] == len(decisions) == decisions["customer_id"].nunique()
    conv = outcomes[outcomes["type"] == "convert"].merge(decisions[["decision_id", "decided_us"]], on="decision_id")
    won = set(conv.loc[(conv["occurred_us"] > conv["decided_us"])
                       & (conv["occurred_us"] <= conv["decided_us"] + 28 * DAY_US), "decision_id"])
    reward = decisions["decision_id"].isin(won).to_numpy(float)
    p = decisions["pscore"].to_numpy(float)
    shown_nothing = decisions["offer_id"].isna().to_numpy()
    assert payload["logged_value"] == pytest.approx(reward.mean())
    # no-offer: the control arm (and customers with nothing eligible), weighted by 1 / pscore
    w = shown_nothing / p
    assert table.loc[("no-offer", "ips"), "value"] == pytest.approx((w * reward).mean(), rel=1e-12)
    assert table.loc[("no-offer", "snips"), "value"] == pytest.approx((w * reward).sum() / w.sum(), rel=1e-12)
    # current: the policy's own first choice; the log agrees with it on the policy arm and some exploration
    w = (decisions["offer_id"] == decisions["policy_offer_id"]).to_numpy() / p
    assert table.loc[("current", "ips"), "value"] == pytest.approx((w * reward).mean(), rel=1e-12)
    for cand in ("current", "no-offer", "random", "propensity"):
        row = table.loc[(cand, "snips")]
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
        assert set(table.loc[cand].index) == {"ips", "snips", "dr"}
        assert 0 <= row["true_value"] <= 1
    # the truth is exact here (one decision per customer), and the log's arms are random samples
    assert payload["truth"]["exact"] is True
    no_offer = table.loc[("no-offer", "snips")]
    assert no_offer["ci_low"] <= no_offer["true_value"] <= no_offer["ci_high"]
    # the candidate catalog's new offer was never logged: said, with the offer named
    bigger = table.loc[("catalog:bigger", "ips")]
    assert "low_support" in bigger["warning_codes"] and "xs-new (0 logged)" in bigger["warnings"]
    assert f"{unsupported['catalog:bigger']:.1%} of its choices" in payload["notes"][0]
    assert (out / "ope.csv").exists()


@pytest.mark.slow  # trains several models: make test, not make test-fast
def test_uplift_candidate_without_a_champion_and_a_bad_window_exit_2(served_home, simulated):
    tmp, logging, _, db = simulated
    base = ["nbo", "evaluate", "--dataset", str(served_home.dataset), "--catalog", str(logging),
            "--decisions", f"sqlite:///{db}", "--bootstrap", "0", "--out", str(tmp / "x")]
    r = _cli([*base, "--log", f"{AS_OF}..2025-07-02", "--policy", "uplift"], served_home.home)
    assert r.returncode == 2 and "cvm train uplift" in " ".join(r.stderr.split())
    r = _cli([*base, "--log", "2025-07-02..2025-07-01"], served_home.home)
    assert r.returncode == 2 and "TO must be after FROM" in r.stderr
    r = _cli([*base, "--log", "2024-01-01..2024-02-01"], served_home.home)
    assert r.returncode == 2 and "no logged decision" in r.stderr
    r = _cli([*base, "--log", f"{AS_OF}..2025-07-02", "--as-of", AS_OF], served_home.home)
    assert r.returncode == 2 and "exactly one of" in r.stderr


def test_dr_with_the_cross_fitted_reward_model_on_a_random_log():
    """On a log whose actions are uniformly random, DR with the cross-fitted per-action means and
    SNIPS estimate the same policy value; with a wrong reward model DR still does (its IPS-weighted
    residual corrects it), while DM alone is off by the model's error."""
    from scoring.ope import evaluate_policies
    from scoring.policies import cross_fitted_means, fold_of

    rng = np.random.default_rng(0)
    n, k = 20_000, 3
    action = rng.integers(0, k, n)
    reward = (rng.random(n) < np.array([0.1, 0.3, 0.5])[action]).astype(float)
    pscore = np.full(n, 1 / k)
    pi = np.zeros((n, k))
    pi[:, 2] = 1.0  # always the best action: true value 0.5
    q = cross_fitted_means(action, reward, fold_of([f"c{i}" for i in range(n)]), k)
    table = evaluate_policies(reward, action, pscore, {"best": pi}, q, n_bootstrap=200).set_index("method")
    # about 6,667 rounds show action 2: a standard error of 0.006 on its mean; 4 of them is 0.025
    for m in ("ips", "snips", "dr"):
        assert table.loc[m, "value"] == pytest.approx(0.5, abs=0.025)
    assert table.loc["dr", "value"] == pytest.approx(table.loc["snips", "value"], abs=0.01)
    # a misaligned reward model (the actions' means shifted by one) moves DR off by far more
    wrong = np.roll(q, 1, axis=1)
    shifted = evaluate_policies(reward, action, pscore, {"best": pi}, wrong, n_bootstrap=0).set_index("method")
    assert abs(shifted.loc["dr", "value"] - table.loc["dr", "value"]) < 0.01  # DR: still unbiased, by its residual
    assert abs(evaluate_policies(reward, action, pscore, {"best": pi}, wrong, methods=["dm"],
                                 n_bootstrap=0)["value"].iloc[0] - 0.5) > 0.15  # DM alone is the model's error
