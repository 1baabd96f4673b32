"""Training data: feature snapshots joined to labels at each rolling origin.

Everything reads the sources restricted to rows dated strictly before the training
``as_of``: altering or removing later rows cannot change anything training produces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import ibis
import pandas as pd

from base.dates import cutoff
from features.build import build_features
from features.definitions import FeatureSet
from profiles.config import ResolutionConfig
from profiles.link import linked_tables
from sources.load import Sources
from training import labels as L
from training.config import LabelConfig
from training.origins import Origins
from training.tasks import Task

#: the column holding each table's time (tables not listed are timeless)
TIME_COLUMNS = {"transactions": "timestamp", "events": "timestamp", "contacts": "timestamp",
                "responses": "timestamp", "customers": "updated_at", "identities": "seen_at"}
LABEL_COLUMNS = ("label", "orders", "spend")


class TaskUnavailableError(ValueError):
    """The dataset lacks what the task needs (e.g. no categories for cross-sell)."""


def before(sources: Sources, until: date) -> Sources:
    """The same sources with every dated row at or after ``until`` removed."""
    cut = ibis.timestamp(cutoff(until))
    tables = {}
    for name, t in sources.tables.items():
        col = TIME_COLUMNS.get(name)
        if col and col in t.columns:
            keep = t[col] < cut
            if name == "customers":  # attributes without a date are known at every date
                keep = t[col].isnull() | keep
            t = t.filter(keep)
        tables[name] = t
    return Sources(sources.dataset, sources.engine, tables, sources.reports, sources.category_from)


def data_start(sources: Sources) -> date:
    tx = sources["transactions"]
    first = sources.engine.execute(tx.timestamp.min().name("first"))
    if first is None or pd.isna(first):
        raise TaskUnavailableError("no transactions before as_of")
    return pd.Timestamp(first).date()


def check_task(task: Task, fs: FeatureSet) -> None:
    if task == "cross-sell" and not fs.shape.categories:
        raise TaskUnavailableError("cross-sell needs product categories and the dataset has none "
                                   "(no `category` on transactions, no products catalog)")


def labels_at(task: Task, tables: Mapping[str, ibis.Table], origin: date, horizon: int, cfg: LabelConfig,
              fs: FeatureSet) -> ibis.Table:
    tx = tables["transactions"]
    if task == "churn":
        return L.churn_labels(tx, origin, horizon, cfg.activity_window_days)
    if task == "next-purchase":
        return L.next_purchase_labels(tx, origin, horizon)
    if task == "clv":
        return L.clv_labels(tx, origin, horizon)
    return L.cross_sell_labels(tx, origin, horizon, cfg.cross_sell_lookback_days, fs.shape.categories)


@dataclass
class TrainingData:
    task: Task
    origins: Origins
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    feature_set: FeatureSet

    def fingerprint(self) -> str:
        """Changes whenever any training, validation or test row changes."""
        h = hashlib.sha256()
        for frame in (self.train, self.valid, self.test):
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]


def assemble(task: Task, sources: Sources, fs: FeatureSet, origins: Origins, cfg: LabelConfig,
             profiles: ResolutionConfig | None = None, step=None) -> TrainingData:
    """Feature snapshot + labels at every origin; ``sources`` must already end at as_of."""
    check_task(task, fs)
    frames: dict[date, pd.DataFrame] = {}
    for origin in (*origins.train, origins.valid, origins.test):
        if step:
            step(f"snapshot {origin}")
        tables, _ = linked_tables(sources, origin, None, profiles)
        feats = sources.engine.execute(build_features(tables, origin, fs))
        labs = sources.engine.execute(labels_at(task, tables, origin, origins.horizon_days, cfg, fs))
        frame = labs.merge(feats, on="customer_id", how="inner", validate="many_to_one")
        frames[origin] = frame.sort_values([c for c in ("customer_id", "category") if c in frame.columns],
                                           kind="stable").reset_index(drop=True)
    train = pd.concat([frames[o] for o in origins.train], ignore_index=True)
    return TrainingData(task, origins, train, frames[origins.valid], frames[origins.test], fs)
