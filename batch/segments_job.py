"""The nightly batch's segments: every customer of the snapshot evaluated against the dataset's
segment file, with the batch's scores; written beside the scores of the run.

``<out>/as_of=DATE/segments.parquet`` holds the membership (customer_id, segment);
``segment_sizes.parquet`` per segment its size, share of customers, and entries and exits since
the previous date with segments in the same output root; the manifest records both. Each file
is written aside and renamed into place.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pandas as pd

from base.atomic import write_json
from base.dates import partition_dir, partitions
from scoring.segments.definitions import Segment
from scoring.segments.evaluate import customer_table, membership, sizes

MEMBERS_FILE = "segments.parquet"
SIZES_FILE = "segment_sizes.parquet"
#: the scores a segment condition may read
SCORE_COLUMNS = ("churn_probability", "next_purchase_probability", "expected_orders", "clv")


def previous_members(root: Path, as_of: date) -> tuple[date | None, pd.DataFrame | None]:
    days = [d for d in partitions(root) if d < as_of and (partition_dir(root, d) / MEMBERS_FILE).exists()]
    if not days:
        return None, None
    return days[-1], pd.read_parquet(partition_dir(root, days[-1]) / MEMBERS_FILE)


def _write(frame: pd.DataFrame, path: Path) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(staged, index=False)
    os.replace(staged, path)


def segment_table(snapshot_dir: Path, scores_path: Path | None) -> pd.DataFrame:
    features = pd.read_parquet(snapshot_dir)
    scores = None
    if scores_path is not None and scores_path.exists():
        scores = pd.read_parquet(scores_path, columns=["customer_id", *SCORE_COLUMNS])
        scores["customer_id"] = scores["customer_id"].astype(str)
    features["customer_id"] = features["customer_id"].astype(str)
    return customer_table(features, scores)


def write_segments(out_dir: Path, root: Path, as_of: date, snapshot_dir: Path, segments: list[Segment],
                   source: Path) -> dict:
    """Evaluate ``segments`` on the snapshot and the run's scores; write and record them."""
    table = segment_table(snapshot_dir, out_dir / "scores.parquet")
    members = membership(segments, table)
    prev_day, previous = previous_members(root, as_of)
    table_sizes = sizes(segments, members, len(table), previous)
    _write(members, out_dir / MEMBERS_FILE)
    _write(table_sizes, out_dir / SIZES_FILE)
    summary = {"file": str(source), "previous_as_of": prev_day.isoformat() if prev_day else None,
               "members": MEMBERS_FILE, "sizes": SIZES_FILE,
               "segments": json.loads(table_sizes.to_json(orient="records"))}
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["segments"] = summary
    write_json(manifest_path, manifest)
    return summary


def evaluate_at(features_root: Path, batch_root: Path, as_of: date, segments: list[Segment]
                ) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(customer table, membership, whether the batch's scores were there) of ``segments`` on the
    feature snapshot of ``as_of`` and that date's batch scores (``cvm segments preview|export``)."""
    snap = partition_dir(features_root, as_of)
    if not snap.exists():
        raise FileNotFoundError(f"no feature snapshot as of {as_of} under {features_root}: build it with "
                                f"cvm features build --as-of {as_of} (or cvm score-batch)")
    scores = partition_dir(batch_root, as_of) / "scores.parquet"
    table = segment_table(snap, scores)
    return table, membership(segments, table), scores.exists()


EXPORT_COLUMNS = ("customer_id", "segment", "rfm_segment", "recency_days", "frequency", "monetary",
                  "avg_order_value", *SCORE_COLUMNS)


def export_rows(table: pd.DataFrame, members: pd.DataFrame, name: str, as_of: date) -> pd.DataFrame:
    """One segment's members with the columns a campaign tool wants (those the table has)."""
    ids = members.loc[members["segment"] == name, ["customer_id"]]
    rows = ids.merge(table, on="customer_id", how="left")
    rows["segment"] = name
    rows["as_of"] = as_of.isoformat()
    cols = [c for c in EXPORT_COLUMNS if c in rows.columns] + ["as_of"]
    return rows[cols].sort_values("customer_id", kind="stable").reset_index(drop=True)
