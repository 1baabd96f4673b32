"""``cvm nbo impact``: the decision log's measured impact over a window, written and logged.

Reads the decisions made in ``[start, end)`` and their outcomes from the decision log,
measures the lift of the policy over the control and exploration arms
(``scoring.impact.measure_impact``), writes ``impact.json`` and logs the figures to MLflow
(experiment ``cvm-impact``). A log without randomised arms in the window (a dataset such
as Complete Journey, whose campaigns were not randomised, before any decision was logged)
gives a report that says so instead of numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

from base.atomic import write_text
from base.dates import cutoff
from base.home import Home
from scoring.decisions import open_decision_store, to_us
from scoring.impact import ARMS, ImpactReport, frames_from_log, measure_impact

#: MLflow experiment the measurements are logged to
EXPERIMENT = "cvm-impact"


@dataclass
class ImpactResult:
    report: ImpactReport | None
    path: Path
    payload: dict
    randomised: bool


def attributed_outcomes(home: Home, dataset_spec: str, decisions: pd.DataFrame, outcomes: pd.DataFrame, *,
                        catalog_path: Path | None, horizon_days: int, end: datetime) -> pd.DataFrame:
    """The log's outcomes with its conversions replaced by those attributed from the dataset's
    transactions (``scoring.attribution``: the rule is ``RULE``), in the log's outcome columns."""
    import ibis

    from base.engines import open_engine
    from profiles.link import linked_tables
    from scoring.attribution import attribute_conversions
    from scoring.catalog import load_catalog, no_catalog_message, resolve_catalog_path
    from sources.dataset import resolve_dataset
    from sources.load import load_sources

    ds = resolve_dataset(dataset_spec, home)
    path = resolve_catalog_path(dataset_spec, catalog_path)
    if path is None:
        raise ValueError(f"--attribute needs the offers' target categories: {no_catalog_message(ds.name)}")
    catalog = load_catalog(path)
    categories = {o.id: o.target_category for o in catalog.offers if o.target_category}
    frame, _ = frames_from_log(decisions, outcomes)
    if frame.empty:
        return outcomes
    first = frame["timestamp"].min().tz_convert(None).to_pydatetime()
    last = end + timedelta(days=horizon_days)
    with open_engine("duckdb", temp_dir=home.tmp(ensure=True)) as engine:
        tables, _ = linked_tables(load_sources(ds, engine), last.date())
        tx = tables["transactions"]
        window = tx.filter((tx.timestamp > ibis.timestamp(first)) & (tx.timestamp < ibis.timestamp(last))
                           & tx.category.notnull())
        purchases = engine.execute(window.select("customer_id", "category", "timestamp", "amount"))
    purchases["customer_id"] = purchases["customer_id"].astype(str)
    purchases["timestamp"] = pd.to_datetime(purchases["timestamp"], utc=True)
    converts = attribute_conversions(frame, purchases, categories, horizon_days=horizon_days)
    who = decisions.set_index("decision_id")
    rows = pd.DataFrame({
        "outcome_id": converts["outcome_id"], "decision_id": converts["decision_id"],
        "customer_id": who.loc[converts["decision_id"], "customer_id"].to_numpy(),
        "offer_id": who.loc[converts["decision_id"], "offer_id"].to_numpy(), "type": "convert",
        "occurred_us": ((pd.to_datetime(converts["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC"))
                        // pd.Timedelta(microseconds=1)).astype("int64"),
        "value": converts["value"].astype("float64"), "received_us": 0})
    kept = outcomes[outcomes["type"] != "convert"]
    return pd.concat([kept, rows[list(outcomes.columns)]], ignore_index=True) if len(rows) else kept


def run_impact(home: Home, dataset: str, start: date, end: date, *, out: Path | None = None,
               decisions_url: str | None = None, horizon_days: int = 28, min_customers: int = 100,
               attribute: bool = False, dataset_spec: str | None = None,
               catalog_path: Path | None = None) -> ImpactResult:
    """Measure the window ``[start, end)`` (dates, UTC) and write ``impact.json`` under ``out``
    (default ``$CVM_HOME/batch/<dataset>/impact/<start>_<end>/``). With ``attribute``,
    conversions come from the dataset's transactions (``scoring.attribution.RULE``) instead of
    the reported ``convert`` outcomes."""
    from scoring.attribution import RULE

    if end <= start:
        raise ValueError(f"--to {end} must be after --from {start}")
    lo, hi = cutoff(start), cutoff(end)
    store = open_decision_store(decisions_url, home, dataset)
    try:
        decisions = store.decisions(to_us(lo), to_us(hi))
        outcomes = store.outcomes(to_us(lo), to_us(hi))
    finally:
        store.close()
    if attribute:
        outcomes = attributed_outcomes(home, dataset_spec or dataset, decisions, outcomes,
                                       catalog_path=catalog_path, horizon_days=horizon_days, end=hi)
    arms = sorted(set(decisions["arm"])) if len(decisions) else []
    # randomised decisions with outcomes: without any outcome there is no response to measure
    arms_ok = len(decisions) > 0 and {"control", "policy"} <= set(arms)
    randomised = arms_ok and len(outcomes) > 0
    out = out or home.batch(dataset) / "impact" / f"{start}_{end}"
    report = None
    if randomised:
        frame, events = frames_from_log(decisions, outcomes)
        report = measure_impact(frame, events, start=lo, end=hi, horizon_days=horizon_days,
                                min_customers=min_customers)
        payload = {"dataset": dataset, "randomised": True,
                   "conversions": RULE.format(h=horizon_days) if attribute else "reported convert outcomes",
                   **report.to_dict()}
    else:
        payload = {"dataset": dataset, "randomised": False, "start": str(start), "end": str(end),
                   "decisions": len(decisions), "arms": arms, "outcomes": len(outcomes),
                   "message": (f"{len(decisions):,} decisions with a control group in this window, but no outcome "
                               "reported for them (POST /outcomes, cvm outcomes ingest): no response to measure"
                               if arms_ok else
                               "no randomised decisions in this window: the log holds no decisions with both a "
                               "control and a policy arm, so there is no lift to measure (Complete Journey's "
                               "campaigns were not randomised; decisions logged by cvm serve or cvm score-batch "
                               "with the catalog's experiment are)")}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "impact.json"
    write_text(path, json.dumps(payload, indent=2, sort_keys=False))
    return ImpactResult(report, path, payload, randomised)


def log_to_mlflow(result: ImpactResult, tracking_uri: str, dataset: str) -> str:
    """Log the measurement (figures as metrics, impact.json as an artifact); the run id. Uses a
    client bound to ``tracking_uri``: the process's MLflow settings are left as they were."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(EXPERIMENT)
    run = client.create_run(experiment_id, run_name=f"impact {result.payload.get('start')}..{result.payload.get('end')}",
                            tags={"dataset": dataset, "randomised": str(result.randomised).lower()})
    run_id = run.info.run_id
    try:
        if result.report is not None:
            for lift in result.report.lifts:
                key = f"{lift.metric}.{lift.test}_vs_{lift.reference}"
                for name, iv in (("abs", lift.absolute), ("rel", lift.relative)):
                    for part in ("estimate", "low", "high"):
                        value = getattr(iv, part)
                        if value is not None and pd.notna(value):
                            client.log_metric(run_id, f"{key}.{name}.{part}", float(value))
            for arm in ARMS:
                try:
                    stats = result.report.arm(arm)
                except KeyError:
                    continue
                client.log_metric(run_id, f"customers.{arm}", stats.customers)
        client.log_artifact(run_id, str(result.path))
    finally:
        client.set_terminated(run_id)
    return run_id
