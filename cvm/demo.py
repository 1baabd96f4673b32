"""``cvm demo`` (what ``make demo`` runs): the main job end to end, as a short script of the
same calls the other commands make.

1. Complete Journey (real data): point-in-time features, published, one customer looked up;
2. the four models trained as of that date, judged against their baselines, registered;
3. the offer policy evaluated offline; the scoring service started and called over HTTP;
4. the nightly batch for two dates four weeks apart; the customer-value report;
5. a synthetic dataset with messy identities: golden records, features, linkage quality.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from cvm.common import HomeOpt, as_of_date, console, err, home_of, run

EXPERIMENTS = Path("experiments")
DATASET = "completejourney"


def demo(
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot and training date on Complete Journey (data covers "
                                       "2017).")] = "2017-11-01",
    synthetic_customers: Annotated[int, typer.Option("--synthetic-customers", min=0, help="Persons in the synthetic "
                                                     "part (0 skips it).")] = 20_000,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="Optuna trials per model (default: "
                                                  "experiments/<task>.yaml, 30).")] = None,
    home: HomeOpt = None,
) -> None:
    """The main job end to end: features on Complete Journey (real data), published and looked up; the four models
    trained as of that date, judged against their baselines and registered in MLflow; offers evaluated and served
    over HTTP; the nightly batch and the report; then a synthetic dataset with messy identities: golden records,
    features, linkage quality."""
    from base.dates import partition_dir
    from cvm.cli_batch import nightly
    from cvm.cli_features import build, linkage
    from cvm.cli_serve import evaluate_offers
    from cvm.cli_train import train_and_report
    from cvm.output import print_batch, print_build, print_stats
    from report.page import write_report
    from training.tasks import TASKS

    day = as_of_date(as_of)
    h = home_of(home)
    config = EXPERIMENTS / f"{DATASET}.yaml"
    config = config if config.exists() else None

    console.rule("[bold]1. Complete Journey (Dunnhumby, real data): point-in-time features")
    built = run(lambda: build(DATASET, as_of, publish=True, config=config, replace_schema=True, home=home))
    print_build(built.result, built.published)
    first = _lookup(h, built.result)

    console.rule(f"[bold]2. Training as if today were {as_of}: churn, next-purchase, cross-sell, clv")
    run(lambda: train_and_report(list(TASKS), DATASET, as_of, trials=trials, experiments=EXPERIMENTS, home=home))

    console.rule("[bold]3. Next-best offers (offline, on the 28 days after as_of) and the scoring service")
    evaluate_offers(DATASET, as_of, horizon_days=28, seed=0, home=home)
    from base.processes import ProcessError

    run(lambda: call_service(h.root, DATASET, first), ProcessError)

    console.rule("[bold]4. The nightly batch (four weeks apart, for segment migration) and the CVM report")
    for batch_day, publish in ((day - timedelta(days=28), False), (day, True)):
        print_batch(nightly(batch_day, dataset=DATASET, config=config, publish=publish, home=home))
    report_path = h.root / "reports" / f"{DATASET}-{as_of}.html"
    inputs, size = run(lambda: write_report(h, DATASET, day, partition_dir(h.batch(DATASET), day), report_path,
                                            status=err.status))
    console.print(f"CVM report: {report_path} ({size / 1e6:.1f} MB, {len(inputs.cards)} model cards); "
                  "open it in a browser (works offline)")

    if synthetic_customers:
        from sources.synth import generate

        console.rule(f"[bold]5. Synthetic data, {synthetic_customers:,} persons with messy identities")
        out = h.datasets(ensure=True) / "synthetic-demo"
        with err.status("generating"):
            generate(out, synthetic_customers, seed=0)
        synthetic = run(lambda: build(str(out), "2025-07-01", replace_schema=True, home=home))
        print_build(synthetic.result)
        print_stats("identity resolution against the generator's ground truth (pairwise)",
                    {k: v for k, v in run(lambda: linkage(str(out), None, None, home)).items()
                     if k in ("precision", "recall", "f1", "true_persons", "predicted_profiles",
                              "persons_split", "profiles_merging_persons")})
    console.print("next: `cvm features schema --dataset completejourney` lists every feature; "
                  "`cvm models list` the registered models; `mlflow ui --backend-store-uri "
                  "sqlite:///cvm_home/mlflow/mlflow.db` the runs; `cvm --help` the commands.")


def _lookup(home, result) -> str:
    """The first customer of the snapshot, looked up in the online store."""
    import pyarrow.dataset as pads

    from features.online import open_online_store

    first = pads.dataset(str(result.path)).to_table(columns=["customer_id"]).column(0)[0].as_py()
    with open_online_store(home, result.dataset) as store:
        row = store.get(first)
    console.print(f"online store lookup of customer {first}: segment {row['rfm_segment']}, "
                  f"recency {row['recency_days']} d, frequency {row['frequency']}, monetary {row['monetary']:.2f}")
    return first


def call_service(home: Path, dataset: str, customer_id: str) -> None:
    """Start ``cvm serve``, score one customer and ask for its offers over HTTP, stop it."""
    import httpx

    from base.processes import free_port, http_ok, running
    from serving.keys import ensure_key_file

    key, path, created = ensure_key_file(home)
    console.print(f"API key ({'new, ' if created else ''}stored in {path}): [bold]{key}[/bold]")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CVM_API_KEYS", "CVM_API_KEYS_FILE")}
    env.update({"CVM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"})
    log = home / "serving" / "demo-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "cvm.cli", "serve", "--port", str(port), "--dataset", dataset, "--reload-seconds", "0"]
    with (running(cmd, ready=http_ok(url + "/readyz"), env=env, log=log, timeout=120, what="cvm serve"),
          httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c):
        assert httpx.post(url + "/score", json={"customer_ids": [customer_id]}).status_code == 401
        r = c.post("/score", json={"customer_ids": [customer_id]}).json()["results"][0]
        rec = c.post("/recommend", json={"customer_id": customer_id, "k": 3}).json()
    console.print(f"POST /score {customer_id}: segment {r['rfm_segment']}, churn {r['churn_probability']:.3f}, "
                  f"next purchase {r['next_purchase_probability']:.3f}, CLV {r['clv']:.2f}; churn driven by "
                  + ", ".join(f"{x['feature']} ({x['effect']})" for x in r["reasons"].get("churn", [])))
    console.print(f"POST /recommend {customer_id}: decision {rec['decision_id']} (arm {rec['arm']}, pscore "
                  f"{rec['pscore']:.3f}, logged before the answer): " + ("; ".join(
                      f"{o['offer_id']} (expected value {o['expected_value']:.2f})" for o in rec["offers"])
                      or rec.get("control_group") or "no offer qualifies"))
    console.print("without a key: 401. Serve it yourself: `cvm serve` (the key above is read from "
                  f"{path}); try: curl -H 'Authorization: Bearer {key}' -d "
                  f"'{{\"customer_ids\": [\"{customer_id}\"]}}' -H 'Content-Type: application/json' "
                  "localhost:3000/score")
