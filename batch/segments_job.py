"""Customer segments in the nightly batch and for ``cvm segments preview|export``: every customer
of a date's feature snapshot evaluated against the dataset's segment file
(``scoring.segments``), with that date's batch scores and the event counts the snapshot does
not hold (counted from the same source tables the snapshot was built from).

In a batch run, written into the run's staging directory before it is swapped in
(``batch.job.staged_output``), so a reader sees scores and segments of one run or of the
previous one, never a mix:

* ``segments.parquet``: the membership, one row per (customer_id, segment);
* ``segment_sizes.parquet``: per segment its rule, size, share of the customers, and entries,
  exits and size at the previous date with segments in the same output root (null when there is
  none, or when the segment was not defined there with the same rule);
* ``manifest.json`` gets ``segments`` (the file, the previous date, the sizes) and both files
  with their rows and checksums under ``files``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from base.dates import cutoff, partition_dir, partitions
from base.engines import open_engine
from base.home import Home
from batch.job import describe_file
from features.build_config import BuildConfig
from features.definitions import FeatureSet
from features.snapshot import data_files
from scoring.segments.definitions import PURCHASE, EventCount, Segment, leaves
from scoring.segments.evaluate import (
    EventCounts,
    count_events,
    counts_needed,
    customer_table,
    membership,
    sizes,
)
from sources.dataset import Dataset

MEMBERS_FILE = "segments.parquet"
SIZES_FILE = "segment_sizes.parquet"
#: the batch scores a segment table carries (conditions read the first four; exports show all)
SCORE_COLUMNS = ("churn_probability", "next_purchase_probability", "expected_orders", "clv", "best_offer_id",
                 "best_offer_expected_value")
#: what ``cvm segments export`` writes for a campaign tool (those the table has)
EXPORT_COLUMNS = ("customer_id", "segment", "as_of", "rfm_segment", "recency_days", "frequency", "monetary",
                  "avg_order_value", "tenure_days", *SCORE_COLUMNS)


def load_event_counts(ds: Dataset, as_of: date, home: Home, counts: list[EventCount],
                      config: BuildConfig | None = None) -> EventCounts | None:
    """``counts`` as of ``as_of`` from the dataset's sources (validated, golden ids, the event log
    appended: what the snapshot was built from), on an embedded DuckDB; None when there is nothing
    to count. Only rows of the longest window are read."""
    if not counts:
        return None
    from features.pipeline import source_tables

    cfg = config or BuildConfig()
    end = cutoff(as_of)
    start = end - timedelta(days=max(c.within_days for c in counts))
    types = sorted({c.type for c in counts if c.type != PURCHASE})
    wanted = tuple(t for t, need in (("events", bool(types)),
                                     ("transactions", any(c.type == PURCHASE for c in counts))) if need)
    import ibis

    with open_engine("duckdb", temp_dir=home.tmp(ensure=True)) as engine:
        tables = source_tables(ds, as_of, engine, home, tables=wanted, validation=cfg.validation,
                               profiles=cfg.profiles)
        events = transactions = None
        if types and "events" in tables:
            ev = tables["events"]
            ev = ev.filter((ev.timestamp >= ibis.timestamp(start)) & (ev.timestamp < ibis.timestamp(end))
                           & ev.event_type.isin(types))
            events = engine.execute(ev.select(customer_id=ev.customer_id.cast("string"), timestamp=ev.timestamp,
                                              event_type=ev.event_type))
        if "transactions" in wanted:
            tx = tables["transactions"]
            lines = tx.filter(tx.timestamp < ibis.timestamp(end))
            # every line (before as_of) of the orders whose first line is in the window
            first = lines.group_by(["customer_id", "order_id"]).agg(first_ts=lines.timestamp.min())
            first = first.filter(first["first_ts"] >= ibis.timestamp(start))
            kept = lines.semi_join(first, ["customer_id", "order_id"])
            cols = {"customer_id": kept.customer_id.cast("string"), "order_id": kept.order_id.cast("string"),
                    "timestamp": kept.timestamp}
            if "category" in kept.columns:
                cols["category"] = kept.category.cast("string")
            transactions = engine.execute(kept.select(**cols))
    return count_events(counts, as_of, events=events, transactions=transactions)


def _needed_columns(segments: list[Segment], names: list[str]) -> list[str]:
    wanted = {"customer_id", "as_of", "rfm_segment"}
    for s in segments:
        for leaf in leaves(s.where):
            wanted.update((leaf.column, *leaf.fallbacks))
    return [n for n in names if n in wanted]


def segment_table(ds: Dataset, as_of: date, home: Home, segments: list[Segment], snapshot_dir: Path,
                  fs: FeatureSet, scores_path: Path | None, *, config: BuildConfig | None = None,
                  columns: list[str] | None = None, counts: EventCounts | None = None) -> pd.DataFrame:
    """The customers of the snapshot with what the segments read: features (``columns``, default
    only those the rules read), the scores of ``scores_path`` when it exists, and the event counts
    the snapshot does not hold (``counts``, or counted from the sources here)."""
    features = pd.read_parquet(snapshot_dir, columns=columns or _needed_columns(segments, fs.names))
    scores = None
    if scores_path is not None and scores_path.exists():
        import pyarrow.parquet as pq

        have = set(pq.read_schema(_parts(scores_path)[0]).names)
        scores = pd.read_parquet(scores_path, columns=["customer_id", *[c for c in SCORE_COLUMNS if c in have]])
    if counts is None:
        counts = load_event_counts(ds, as_of, home, counts_needed(segments, features.columns), config)
    return customer_table(segments, features, scores, counts, as_of=as_of)


def _parts(path: Path) -> list[Path]:
    """A Parquet output is one file (pandas) or a directory of part files (Spark)."""
    return data_files(path) if path.is_dir() else [path]


def previous_members(root: Path, as_of: date) -> tuple[date | None, pd.DataFrame | None, dict[str, str]]:
    """The latest date before ``as_of`` with segments in ``root``: its membership and the rule of
    each segment defined then (``{}`` when its sizes file is unreadable)."""
    days = [d for d in partitions(root) if d < as_of and (partition_dir(root, d) / MEMBERS_FILE).exists()]
    if not days:
        return None, None, {}
    out = partition_dir(root, days[-1])
    rules: dict[str, str] = {}
    if (out / SIZES_FILE).exists():
        old = pd.read_parquet(out / SIZES_FILE)
        if "rule" in old.columns:
            rules = dict(zip(old["segment"].astype(str), old["rule"].astype(str)))
    return days[-1], pd.read_parquet(out / MEMBERS_FILE), rules


def segment_sizes(segments: list[Segment], members: pd.DataFrame, customers: int, root: Path, as_of: date
                  ) -> tuple[pd.DataFrame, date | None]:
    """Sizes and movement since the previous date with segments; a segment whose rule was different
    (or that was not defined) then has no movement."""
    prev_day, previous, rules = previous_members(root, as_of)
    table = sizes(segments, members, customers, previous)
    table.insert(1, "rule", [s.rule() for s in segments])
    if previous is not None:
        same = table.apply(lambda r: rules.get(r["segment"]) == r["rule"], axis=1).astype(bool)
        for col in ("entries", "exits", "previous_size"):
            table[col] = table[col].where(same)
    return table, prev_day


@dataclass
class NightlySegments:
    """The segments of one batch run, loaded and checked before anything is scored."""

    source: Path
    segments: list[Segment]
    ds: Dataset
    home: Home
    snapshot_dir: Path
    feature_set: FeatureSet
    counts: EventCounts | None
    summary: dict | None = None

    def write(self, staging: Path, root: Path, as_of: date) -> dict:
        """Evaluate on the staged scores and write membership, sizes and the manifest's entry into
        ``staging`` (``batch.job.staged_output``'s ``before_swap``)."""
        table = segment_table(self.ds, as_of, self.home, self.segments, self.snapshot_dir, self.feature_set,
                              staging / "scores.parquet", counts=self.counts)
        members = membership(self.segments, table)
        table_sizes, prev_day = segment_sizes(self.segments, members, len(table), root, as_of)
        members.to_parquet(staging / MEMBERS_FILE, index=False)
        table_sizes.to_parquet(staging / SIZES_FILE, index=False)
        summary = {"file": str(self.source), "previous_as_of": prev_day.isoformat() if prev_day else None,
                   "customers": len(table), "members": MEMBERS_FILE, "sizes": SIZES_FILE,
                   "counted_from_sources": [c for c in (self.counts.table.columns if self.counts else [])
                                            if c != "customer_id"],
                   "segments": json.loads(table_sizes.drop(columns="rule").to_json(orient="records"))}
        manifest_path = staging / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["segments"] = summary
        manifest.setdefault("files", {}).update({name: describe_file(staging / name)
                                                 for name in (MEMBERS_FILE, SIZES_FILE)})
        manifest_path.write_text(json.dumps(manifest, indent=2, default=str))
        self.summary = summary
        return summary


def prepare_nightly(source: Path, segments: list[Segment], ds: Dataset, as_of: date, home: Home,
                    snapshot_dir: Path, fs: FeatureSet, config: BuildConfig | None = None) -> NightlySegments:
    """Count the events the segments read that the snapshot does not hold (before the run scores,
    so that bad input stops it with nothing written)."""
    counts = load_event_counts(ds, as_of, home, counts_needed(segments, fs.names), config)
    return NightlySegments(source, segments, ds, home, snapshot_dir, fs, counts)


def ensure_snapshot(ds: Dataset, home: Home, as_of: date, *, config: BuildConfig | None = None,
                    say: Callable[[str], None] | None = None) -> tuple[Path, FeatureSet]:
    """The feature snapshot of ``as_of`` and its feature set; built (not published) when missing, as
    the nightly batch builds it."""
    from features.definitions import feature_set_from_dict
    from features.publish import build_and_publish
    from features.snapshot import read_schema

    snap = partition_dir(home.features(ds.name), as_of)
    if not snap.exists():
        if say is not None:
            say(f"no feature snapshot of {ds.name} as of {as_of}: building it")
        build_and_publish(ds, as_of, home, config=config)
    return snap, feature_set_from_dict(read_schema(snap.parent))


def evaluate_at(ds: Dataset, home: Home, as_of: date, segments: list[Segment], batch_root: Path, *,
                config: BuildConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(customer table, membership, whether the batch's scores were there) of ``segments`` on the
    feature snapshot of ``as_of`` (``ensure_snapshot``) and that date's batch scores
    (``cvm segments preview|export``). The table holds the export columns too."""
    snap, fs = ensure_snapshot(ds, home, as_of, config=config)
    names = fs.names
    columns = list(dict.fromkeys([*_needed_columns(segments, names), *(c for c in EXPORT_COLUMNS if c in names)]))
    scores = partition_dir(batch_root, as_of) / "scores.parquet"
    table = segment_table(ds, as_of, home, segments, snap, fs, scores, config=config, columns=columns)
    return table, membership(segments, table), scores.exists()


def export_rows(table: pd.DataFrame, members: pd.DataFrame, name: str, as_of: date) -> pd.DataFrame:
    """One segment's members with the columns a campaign tool wants (those the table has)."""
    ids = members.loc[members["segment"] == name, ["customer_id"]]
    rows = ids.merge(table, on="customer_id", how="left")
    rows["segment"] = name
    rows["as_of"] = as_of.isoformat()
    cols = [c for c in EXPORT_COLUMNS if c in rows.columns]
    return rows[cols].sort_values("customer_id", kind="stable").reset_index(drop=True)
