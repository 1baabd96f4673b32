"""What the report reads, gathered for one dataset and as_of.

The customer tables come from the dataset through the same validation and identity
resolution as the features (golden customer ids, rows strictly before ``as_of``), reduced
to one row per customer and day by the engine; the scores, offers and segment migration
are the nightly batch's files for that as_of; model cards and the offline offer evaluation
come from the MLflow registry and runs of the home; the measured impact of the offer policy
comes from the decision log (``report.impact``), for the report's period.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from base.dates import cutoff
from report.cards import ModelCard, load_cards
from report.impact import MeasuredImpact, load_impact
from report.ope import load_ope
from report.segments import SegmentSizes, load_sizes


class ReportError(RuntimeError):
    """Something the report needs is missing; the message says how to produce it."""


@dataclass
class ReportInputs:
    dataset: str
    as_of: date
    daily: pd.DataFrame  # customer_id, day, revenue, orders (before as_of)
    contacts: pd.DataFrame  # customer_id, campaign_id, timestamp (before as_of)
    scores: pd.DataFrame
    offers: pd.DataFrame
    migration: pd.DataFrame
    manifest: dict
    cards: dict[str, ModelCard]
    nbo_evaluation: pd.DataFrame | None
    impact: MeasuredImpact | None = None  # the decision log's randomised arms over the period
    ope: dict | None = None  # the latest off-policy evaluation knowable before as_of (report.ope)
    segment_sizes: SegmentSizes | None = None  # the dataset's own segments, latest batch with them (report.segments)


def load_customer_tables(home, dataset_spec: str, as_of: date, engine_name: str = "duckdb"
                         ) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(dataset name, daily revenue per customer, contacts) from the dataset, before ``as_of``."""
    from base.engines import open_engine
    from profiles.link import linked_tables
    from sources.dataset import resolve_dataset
    from sources.load import load_sources
    from training.dataset import before

    ds = resolve_dataset(dataset_spec, home)
    tables = tuple(t for t in ("transactions", "contacts", "identities") if ds.has(t))
    with open_engine(engine_name, temp_dir=home.tmp(ensure=True)) as eng:
        sources = before(load_sources(ds, eng, tables=tables), as_of)
        linked, _ = linked_tables(sources, as_of)
        tx = linked["transactions"]
        day = tx["timestamp"].cast("date").name("day")
        daily_expr = (tx.group_by([tx["customer_id"].cast("string").name("customer_id"), day])
                      .aggregate(revenue=tx["amount"].sum(), orders=tx["order_id"].nunique()))
        daily = eng.execute(daily_expr)
        if "contacts" in linked:
            c = linked["contacts"]
            contacts = eng.execute(c.select(c["customer_id"].cast("string").name("customer_id"),
                                             c["campaign_id"].cast("string").name("campaign_id"), "timestamp"))
        else:
            contacts = pd.DataFrame({"customer_id": [], "campaign_id": [], "timestamp": pd.to_datetime([])})
    daily["day"] = pd.to_datetime(daily["day"])
    cut = pd.Timestamp(cutoff(as_of))
    return ds.name, daily[daily["day"] < cut].reset_index(drop=True), contacts


def load_batch(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    import json

    if not (out_dir / "manifest.json").exists():
        raise ReportError(f"no batch output in {out_dir}: run `cvm score-batch` for this as_of first")
    read = pd.read_parquet
    return (read(out_dir / "scores.parquet"), read(out_dir / "offers.parquet"),
            read(out_dir / "segment_migration.parquet"), json.loads((out_dir / "manifest.json").read_text()))


def load_nbo_evaluation(tracking_uri: str, dataset: str, as_of: date) -> pd.DataFrame | None:
    """The latest offline offer evaluation logged for this dataset and as_of, if any."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("cvm-nbo")
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.dataset = '{dataset}' and tags.as_of = '{as_of.isoformat()}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(runs[0].info.run_id, "nbo_evaluation.csv", tmp)
        except Exception:  # noqa: BLE001 - a run without the table
            return None
        return pd.read_csv(path)


def gather(home, dataset_spec: str, as_of: date, batch_dir: Path, *, period_days: int = 90,
           decisions_url: str | None = None) -> ReportInputs:
    """Everything the page shows. The decision log is ``decisions_url``, else ``CVM_DECISIONS_URL``,
    else the dataset's embedded log under the home."""
    name, daily, contacts = load_customer_tables(home, dataset_spec, as_of)
    scores, offers, migration, manifest = load_batch(batch_dir)
    uri = home.mlflow_tracking_uri()
    url = decisions_url if decisions_url is not None else os.environ.get("CVM_DECISIONS_URL") or None
    impact = load_impact(home, name, as_of, period_days=period_days, decisions_url=url)
    return ReportInputs(name, as_of, daily, contacts, scores, offers, migration, manifest, load_cards(uri),
                        load_nbo_evaluation(uri, name, as_of), impact, load_ope(home, name, as_of),
                        load_sizes(batch_dir))
