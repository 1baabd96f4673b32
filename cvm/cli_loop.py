"""``cvm outcomes`` and ``cvm nbo impact``: the closed loop's commands.

Thin commands over :mod:`batch.outcomes` and :mod:`batch.impact_job`; the decision log is
the dataset's embedded one under CVM_HOME unless CVM_DECISIONS_URL names another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cvm.common import HomeOpt, as_of_date, command, console, group, home_of, quiet_mlflow, run

outcomes_app = group("Outcomes of logged decisions: impressions, clicks, accepts, rejects, conversions.")

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose decision log is used.")]


def _url() -> str | None:
    return os.environ.get("CVM_DECISIONS_URL") or None


def _dataset(spec: str) -> str:
    from sources.dataset import dataset_name

    return run(lambda: dataset_name(spec))


@command(outcomes_app, "ingest")
def outcomes_ingest(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with outcome_id, decision_id, type, timestamp "
                                         "and optional value.")],
    dataset: DatasetOpt = "completejourney",
    home: HomeOpt = None,
) -> None:
    """Record a file of outcomes in the decision log, as POST /outcomes does: every row is checked first and a bad
    row or an unknown decision id refuses the whole file; outcome ids already recorded are skipped and counted.
    Type not_shown releases a decision that was never shown (it stops counting toward caps)."""
    from base.errors import InputError
    from batch.outcomes import ingest_outcomes
    from scoring.decisions import DecisionStoreUnavailable, open_decision_store

    store = open_decision_store(_url(), home_of(home), _dataset(dataset))
    try:
        counts = run(lambda: ingest_outcomes(file, store), InputError, DecisionStoreUnavailable)
    finally:
        store.close()
    console.print(f"{file}: {counts.received:,} outcomes, {counts.written:,} written, "
                  f"{counts.duplicates:,} duplicates skipped, {counts.released:,} decisions released", soft_wrap=True)


def nbo_impact(
    from_: Annotated[str, typer.Option("--from", help="First decision date (YYYY-MM-DD, UTC).")],
    to: Annotated[str, typer.Option("--to", help="End of the window (exclusive).")],
    dataset: DatasetOpt = "completejourney",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for impact.json; default "
                                             "$CVM_HOME/batch/<dataset>/impact/<from>_<to>/.")] = None,
    horizon_days: Annotated[int, typer.Option("--horizon-days", min=1, help="Days after a decision in which its "
                                              "outcomes count.")] = 28,
    min_customers: Annotated[int, typer.Option("--min-customers", min=1, help="Fewer customers in an arm: not "
                                               "enough data to call.")] = 100,
    attribute: Annotated[bool, typer.Option("--attribute/--no-attribute", help="Conversions from the dataset's "
                                            "transactions: a purchase in the offer's target category within the "
                                            "horizon after the decision (control: the policy's would-be offer), "
                                            "instead of the reported convert outcomes.")] = False,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Offer catalog YAML (the offers' target "
                                                 "categories, for --attribute); default: the dataset's.")] = None,
    home: HomeOpt = None,
) -> None:
    """Measured impact of the offer policy from the decision log's randomised arms: per arm and per offer customers,
    decisions, impressions, response and conversion rates and value per customer, and the lift of the policy over
    the control group and over exploration with 95 % confidence intervals. Writes impact.json, prints the table and
    logs it to MLflow (experiment cvm-impact)."""
    from batch.impact_job import log_to_mlflow, run_impact
    from cvm.output import print_impact

    start, end = as_of_date(from_, "--from"), as_of_date(to, "--to")
    h = home_of(home)
    name = _dataset(dataset)
    result = run(lambda: run_impact(h, name, start, end, out=out, decisions_url=_url(), horizon_days=horizon_days,
                                    min_customers=min_customers, attribute=attribute, dataset_spec=dataset,
                                    catalog_path=catalog), ValueError)
    print_impact(result)
    if result.randomised:
        console.print(f"conversions: {result.payload['conversions']}", soft_wrap=True)
    quiet_mlflow()
    run_id = log_to_mlflow(result, h.mlflow_tracking_uri(), name)
    console.print(f"wrote {result.path}; logged to MLflow run {run_id} (experiment cvm-impact)", soft_wrap=True)


def simulate(
    from_: Annotated[str, typer.Option("--from", help="First simulated day (YYYY-MM-DD): the feature snapshot "
                                       "of that day is scored.")],
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Days to simulate.")] = 28,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="A dataset written by cvm synth (it carries the "
                                         "ground truth).")] = "synthetic",
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Offer catalog YAML; default "
                                                 "scoring/catalogs/synthetic.yaml.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the visits and the drawn outcomes.")] = 0,
    visit_rate: Annotated[float, typer.Option("--visit-rate", min=0.0, max=1.0, help="Share of customers "
                                              "decided for each day.")] = 0.1,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (simulation.json and its own "
                                             "decision log); default $CVM_HOME/batch/<dataset>/simulations/.")]
    = None,
    url: Annotated[str | None, typer.Option("--url", help="Drive a running `cvm serve --simulation-clock` over "
                                            "HTTP instead (same dataset and --catalog as the server); the key "
                                            "comes from CVM_API_KEYS.")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the live decision loop day by day on a synthetic dataset whose response to offers is known: decide for the
    day's visitors through the scoring core (caps, arms, pscores), log, report impressions and some rejects, then
    draw each customer's conversion from the ground truth. Prints the measured lift of the policy over the control
    group and exploration beside the true lift, and whether the 95 % interval contains it."""
    from batch.simulation import SimulationError, simulate_dataset
    from cvm.common import count_progress
    from cvm.output import print_simulation

    start = as_of_date(from_, "--from")
    h = home_of(home)
    quiet_mlflow()
    with count_progress("simulating", "days") as bar:
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            bar(done, days)

        key = (os.environ.get("CVM_API_KEYS") or "").split(",")[0].strip() or None
        result = run(lambda: simulate_dataset(h, dataset, start, days, catalog_path=catalog, seed=seed,
                                              visit_rate=visit_rate, out=out, progress=step, url=url, api_key=key),
                     SimulationError)
    print_simulation(result)
