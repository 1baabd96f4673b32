"""Uplift and off-policy evaluation quality on synthetic data, against the generator's truth.

Three measurements, each printed as a table:

1. **Ranking.** The uplift champion's Qini on its later validation period against the
   propensity-as-uplift baseline's, from its MLflow run (``cvm train uplift``).
2. **Realised value.** Two simulated days on which every customer is decided once (half in the
   control group, no exploration): the offers ranked on propensity (``propensity: model``) or on
   uplift (``propensity: uplift``). Per customer the policy would contact, realised conversion
   value in the policy arm minus that in the control group (the control group's would-be
   contacts, ``policy_offer_id``), per simulation and per seed; the difference uplift minus
   propensity with a 95 % interval (normal, from the two independent arms of each run). Also:
   contacts made to customers whose true uplift for the offer is negative (sleeping dogs).
3. **OPE calibration.** ``--seeds`` simulated days (arms salted per seed: 30 % control, 30 %
   exploration), each customer decided once, then ``cvm nbo evaluate --log`` 's estimates of
   each candidate; how many of the seeds' 95 % intervals contain the candidate's true value
   (``batch.ope_job.true_values``).

Setup (skipped when ``--work`` already holds it): ``cvm synth``, features, the four champions
with small budgets, a 10-day randomised simulation and ``cvm train uplift`` on its log.
Usage: python benchmarks/bench_uplift_quality.py [--customers 3000] [--seeds 20] [--work DIR]
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
START = date(2025, 7, 1)  # champions' as_of and the training simulation's first day
TRAIN_DAYS = 10
EVAL_DAY = date(2025, 9, 1)  # after the uplift model's data: what the policies are judged on
SMALL_TRAIN = """train:
  origins: {step_days: 28, min_history_days: 60, max_train_origins: 2}
  search: {max_rounds: 100, early_stopping_rounds: 10}
  budget: {trials: 2, timeout_seconds: 60}
  seed: 7
"""


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cvm.cli", *args], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def _catalog(categories: list[str], salt: str, control: float, exploration: float, propensity: str) -> dict:
    """The synthetic catalog's cross-sell offer, one per category the champion knows (the
    simulated outcome moves only these), free: every customer with a category has an eligible
    offer, so the randomised log covers the whole base."""
    shipped = yaml.safe_load((REPO / "scoring" / "catalogs" / "synthetic.yaml").read_text())
    template = next(o for o in shipped["offers"] if o["type"] == "cross_sell")
    offers = []
    for c in categories:
        o = copy.deepcopy(template)
        o.update(id=f"xs-{c}", name=f"Try {c}", target_category=c, propensity=propensity, cost=0.0)
        offers.append(o)
    return dict(shipped, version=f"{salt}-{propensity}", offers=offers,
                experiment={"salt": salt, "control_share": control, "exploration_share": exploration})


def _write(catalog: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


def prepare(work: Path, customers: int, seed: int) -> None:
    data, home = work / "synth", work / "home"
    if (work / "ready").exists():
        return
    t0 = time.perf_counter()
    if not (work / "champions").exists():
        _champions(work, data, home, customers, seed)
    from scoring.champions import RegistrySource, categories_of

    cats = categories_of(RegistrySource(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}").champions())
    train_catalog = _write(_catalog(cats, "bench-train", 0.3, 0.3, "model"), work / "catalog-train.yaml")
    _cli("simulate", "--from", str(START), "--days", str(TRAIN_DAYS), "--visit-rate", "0.3", "--dataset", str(data),
         "--catalog", str(train_catalog), "--seed", "1", "--out", str(work / "sim-train"), "--home", str(home))
    as_of = START + timedelta(days=TRAIN_DAYS + 28 + 1)
    _cli("train", "uplift", "--dataset", str(data), "--as-of", str(as_of), "--log",
         str(work / "sim-train" / "decisions.sqlite"), "--catalog", str(train_catalog), "--home", str(home))
    (work / "ready").write_text(f"prepared in {time.perf_counter() - t0:.0f} s\n")


def _champions(work: Path, data: Path, home: Path, customers: int, seed: int) -> None:
    exp = work / "experiments"
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "synthetic.yaml").write_text((REPO / "experiments" / "synthetic.yaml").read_text())
    for task in ("churn", "next-purchase", "cross-sell", "clv"):
        (exp / f"{task}.yaml").write_text("extends: synthetic.yaml\n" + SMALL_TRAIN)
    _cli("synth", "-n", str(customers), "-o", str(data), "--seed", str(seed))
    _cli("features", "build", "--dataset", str(data), "--as-of", str(START), "--publish", "--config",
         str(exp / "synthetic.yaml"), "--home", str(home))
    _cli("train", "all", "--dataset", str(data), "--as-of", str(START), "--experiments", str(exp), "--home", str(home))
    (work / "champions").write_text("")


def ranking(home: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    v = client.get_model_version_by_alias("cvm-uplift", "champion")
    m = client.get_run(v.run_id).data.metrics
    p = client.get_run(v.run_id).data.params
    print("\n1. Ranking on the later validation period (cvm train uplift's MLflow run)\n")
    print("| model | Qini | AUUC | uplift@10% | uplift@30% | corr with true uplift |")
    print("|---|---|---|---|---|---|")
    print(f"| champion {p.get('chosen')} | {m['valid_qini']:.4f} | {m['valid_auuc']:.4f} | "
          f"{m['valid_uplift_at_10']:.4f} | {m['valid_uplift_at_30']:.4f} | {m.get('valid_true_corr', float('nan')):.3f} |")
    for b in ("propensity", "response", "random"):
        print(f"| {b} (baseline) | {m[f'baseline_{b}_qini']:.4f} | | | | |")
    ratio = m["valid_qini"] / m["baseline_propensity_qini"] if m["baseline_propensity_qini"] > 0 else float("nan")
    print(f"\nQini champion / propensity-as-uplift: {ratio:.2f}x (goal: at least 2x)")


def _contacted_value(decisions: pd.DataFrame, outcomes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Realised conversion value per would-be-contacted customer: (policy arm shown, control with a policy offer)."""
    conv = outcomes[outcomes["type"] == "convert"].groupby("decision_id")["value"].sum()
    d = decisions.assign(value=decisions["decision_id"].map(conv).fillna(0.0))
    treated = d[(d["arm"] == "policy") & d["offer_id"].notna()]["value"].to_numpy(float)
    control = d[(d["arm"] == "control") & d["policy_offer_id"].notna()]["value"].to_numpy(float)
    return treated, control


def realised(work: Path, seeds: int) -> None:
    from base.home import Home
    from batch.simulation import run_simulation
    from batch.uplift_job import true_uplift
    from scoring.catalog import Catalog
    from scoring.champions import RegistrySource, categories_of
    from scoring.decisions import SQLiteDecisionStore
    from sources.dataset import resolve_dataset

    home = Home(work / "home")
    dataset = resolve_dataset(str(work / "synth"), home)
    src = RegistrySource(home.mlflow_tracking_uri())
    champions, uplift = src.champions(), src.uplift()
    cats = categories_of(champions)
    rows, diffs = [], []
    for s in range(seeds):
        per = {}
        for basis in ("model", "uplift"):
            catalog = Catalog.model_validate(_catalog(cats, f"bench-value-{s}", 0.5, 0.0, basis))
            out = work / f"sim-value-{basis}-{s}"
            run_simulation(home, dataset, EVAL_DAY, 1, catalog=catalog, champions=champions, seed=100 + s,
                           visit_rate=1.0, out=out, uplift=uplift if basis == "uplift" else None)
            store = SQLiteDecisionStore(out / "decisions.sqlite")
            decisions, outcomes = store.decisions(), store.outcomes()
            store.close()
            t, c = _contacted_value(decisions, outcomes)
            shown = decisions[decisions["offer_id"].notna()][["customer_id", "offer_id"]]
            truth = true_uplift(dataset, home, catalog, shown)
            per[basis] = (t.mean() - c.mean(), t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c), len(t),
                          int((truth["true_uplift"] < 0).sum()), float(truth["true_uplift"].mean()))
            rows.append((s, basis, *per[basis]))
        diffs.append((per["uplift"][0] - per["model"][0], per["uplift"][1] + per["model"][1]))
    print("\n2. Realised incremental conversion value per contacted customer (policy arm minus control's "
          "would-be contacts)\n")
    print("| seed | ranked on | incremental value / contact | 95 % CI | contacts | contacts with true uplift < 0 "
          "| mean true uplift of contacts |")
    print("|---|---|---|---|---|---|---|")
    for s, basis, est, var, n, bad, mean_true in rows:
        h = 1.96 * np.sqrt(var)
        print(f"| {s} | {'propensity' if basis == 'model' else 'uplift'} | {est:.3f} | {est - h:.3f} to {est + h:.3f} "
              f"| {n:,} | {bad:,} | {mean_true:+.4f} |")
    d = np.array([x[0] for x in diffs])
    v = np.array([x[1] for x in diffs])
    est, h = d.mean(), 1.96 * np.sqrt(v.sum()) / len(d)
    print(f"\nuplift minus propensity, pooled over {len(d)} seeds: {est:+.3f} per contact, 95 % CI "
          f"{est - h:+.3f} to {est + h:+.3f}")


def calibration(work: Path, seeds: int, n_bootstrap: int) -> None:
    from base.home import Home
    from batch.ope_job import run_ope
    from batch.simulation import run_simulation
    from scoring.catalog import Catalog
    from scoring.champions import RegistrySource, categories_of
    from sources.dataset import resolve_dataset

    home = Home(work / "home")
    dataset = resolve_dataset(str(work / "synth"), home)
    src = RegistrySource(home.mlflow_tracking_uri())
    champions, uplift = src.champions(), src.uplift()
    cats = categories_of(champions)
    frames = []
    t0 = time.perf_counter()
    for s in range(seeds):
        catalog = _catalog(cats, f"bench-ope-{s}", 0.3, 0.3, "model")
        path = _write(catalog, work / f"catalog-ope-{s}.yaml")
        out = work / f"sim-ope-{s}"
        run_simulation(home, dataset, EVAL_DAY, 1, catalog=Catalog.model_validate(catalog), champions=champions,
                       seed=200 + s, visit_rate=1.0, out=out)
        res = run_ope(home, str(work / "synth"), EVAL_DAY, EVAL_DAY + timedelta(days=1),
                      decisions_url=f"sqlite:///{out / 'decisions.sqlite'}", catalog_path=path,
                      n_bootstrap=n_bootstrap, seed=s, out=out / "ope", champions=champions, uplift=uplift)
        assert res.payload["truth"]["exact"], "a customer was decided twice: the truth is not exact"
        frames.append(res.table.assign(seed=s, rounds=res.payload["rounds"]))
    t = pd.concat(frames, ignore_index=True)
    t["covered"] = (t["ci_low"] <= t["true_value"]) & (t["true_value"] <= t["ci_high"])
    t["error"] = t["value"] - t["true_value"]
    t["width"] = t["ci_high"] - t["ci_low"]
    print(f"\n3. OPE calibration: {seeds} seeds, {int(t['rounds'].median()):,} decisions each, 95 % bootstrap "
          f"intervals ({n_bootstrap} resamples); {time.perf_counter() - t0:.0f} s\n")
    print("| candidate | estimator | intervals containing the truth | mean error | RMSE | mean width | mean true value |")
    print("|---|---|---|---|---|---|---|")
    for (cand, method), g in t.groupby(["candidate", "method"], sort=False):
        print(f"| {cand} | {method} | {int(g['covered'].sum())} / {len(g)} | {g['error'].mean():+.4f} | "
              f"{np.sqrt((g['error'] ** 2).mean()):.4f} | {g['width'].mean():.4f} | {g['true_value'].mean():.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11, help="seed of the synthetic dataset")
    ap.add_argument("--seeds", type=int, default=20, help="simulated days for the OPE calibration")
    ap.add_argument("--value-seeds", type=int, default=5, help="simulated days per policy for the realised value")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cvm-bench-uplift-quality"))
    ap.add_argument("--only", choices=("ranking", "value", "ope"), default=None)
    args = ap.parse_args()
    prepare(args.work, args.customers, args.seed)
    if args.only in (None, "ranking"):
        ranking(args.work / "home")
    if args.only in (None, "value"):
        realised(args.work, args.value_seeds)
    if args.only in (None, "ope"):
        calibration(args.work, args.seeds, args.bootstrap)


if __name__ == "__main__":
    main()
