"""The nightly batch: score every customer of a snapshot and write the outputs atomically.

Output of one run, ``<out>/as_of=YYYY-MM-DD/``: ``scores.parquet``, ``cross_sell.parquet``,
``offers.parquet``, ``segment_migration.parquet`` and ``manifest.json``. Everything is
written into a staging directory beside it and swapped in with one atomic exchange
(``base.atomic.replace_directory``): a reader sees the previous output or the new one,
never a mix, and a run killed at any moment leaves the previous output as it was (the
next run removes the abandoned staging directory). Re-running an as_of replaces its
output; the same inputs give byte-identical data files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from base.atomic import replace_directory
from base.dates import PARTITION_PREFIX, partition_dir, partitions
from batch.score import BatchOutputs, score_snapshot, segment_migration
from features.snapshot import data_files

log = logging.getLogger(__name__)

DATA_FILES = ("scores.parquet", "cross_sell.parquet", "offers.parquet", "segment_migration.parquet")
STAGING_PREFIX = ".staging-"


class BatchError(RuntimeError):
    """The run cannot complete; ``exit_code`` tells a scheduler what kind of failure it was."""

    exit_code = 1


class ReconciliationError(BatchError):
    """Customers in and customers scored do not match: nothing is published."""

    exit_code = 3


@dataclass
class BatchResult:
    out_dir: Path
    manifest: dict
    outputs: BatchOutputs


def output_dir(root: Path, as_of: date) -> Path:
    return partition_dir(root, as_of)


def previous_scores_day(root: Path, as_of: date) -> date | None:
    """The latest as_of before ``as_of`` with scores in ``root`` (segment migration starts there)."""
    days = [d for d in partitions(root) if d < as_of and (output_dir(root, d) / "scores.parquet").exists()]
    return max(days) if days else None


def previous_scores(root: Path, as_of: date) -> tuple[date | None, pd.DataFrame | None]:
    """The latest scored as_of before ``as_of`` and its scores (segment migration reads it)."""
    day = previous_scores_day(root, as_of)
    if day is None:
        return None, None
    return day, pd.read_parquet(output_dir(root, day) / "scores.parquet", columns=["customer_id", "rfm_segment"])


def reconcile(snapshot: pd.DataFrame, scores: pd.DataFrame) -> None:
    """Every customer of the snapshot scored exactly once, or ``ReconciliationError``."""
    ids_in = snapshot["customer_id"].astype(str)
    ids_out = scores["customer_id"].astype(str)
    check_reconciliation(n_in=len(ids_in), n_out=len(ids_out), missing=int((~ids_in.isin(ids_out)).sum()),
                         extra=int((~ids_out.isin(ids_in)).sum()), dupes=int(ids_out.duplicated().sum()))


def check_reconciliation(*, n_in: int, n_out: int, missing: int, extra: int, dupes: int) -> None:
    """The counts any engine computes, checked in one place."""
    if dupes or missing or extra or n_in != n_out:
        raise ReconciliationError(f"reconciliation failed: {n_in} customers in, {n_out} scored "
                                  f"({missing} missing, {extra} unexpected, {dupes} scored twice); "
                                  "the previous output is left in place")


def _parquet_parts(path: Path) -> list[Path]:
    """A Parquet output is one file (pandas) or a directory of part files (Spark)."""
    return data_files(path) if path.is_dir() else [path]


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file or directory of parts, from the footers (no data read)."""
    import pyarrow.parquet as pq

    return int(sum(pq.ParquetFile(part).metadata.num_rows for part in _parquet_parts(path)))


def describe_file(path: Path) -> dict:
    """Rows (from the Parquet footers) and a SHA-256 over the bytes of every part, in name order."""
    h = hashlib.sha256()
    for part in _parquet_parts(path):
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return {"rows": parquet_rows(path), "sha256": h.hexdigest()}


@contextmanager
def staged_output(root: Path, as_of: date, *, before_swap: Callable[[Path], None] | None = None
                  ) -> Iterator[Path]:
    """A staging directory beside the output; swapped in atomically when the block ends
    without an error, removed otherwise. Write the data files and ``manifest.json`` into it."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{STAGING_PREFIX}{as_of.isoformat()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        if before_swap is not None:
            before_swap(staging)
        replace_directory(staging, output_dir(root, as_of))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_manifest(staging: Path, manifest: dict) -> dict:
    """Complete the manifest with the row count and checksum of every data file and write it."""
    manifest = {**manifest, "files": {name: describe_file(staging / name) for name in DATA_FILES}}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def write_outputs(root: Path, as_of: date, outputs: BatchOutputs, migration: pd.DataFrame, manifest: dict,
                  *, before_swap: Callable[[Path], None] | None = None) -> Path:
    """Write into a staging directory, then swap it in atomically. Returns the final path."""
    with staged_output(root, as_of, before_swap=before_swap) as staging:
        tables = {"scores.parquet": outputs.scores, "cross_sell.parquet": outputs.cross_sell,
                  "offers.parquet": outputs.offers, "segment_migration.parquet": migration}
        for name, table in tables.items():
            table.to_parquet(staging / name, index=False)
        write_manifest(staging, manifest)
    return output_dir(root, as_of)


def clean_abandoned(root: Path) -> int:
    """Remove staging directories left by killed runs; returns how many."""
    n = 0
    for d in root.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    for d in root.glob(f".{PARTITION_PREFIX}*.old-*"):
        shutil.rmtree(d, ignore_errors=True)
    return n


def base_manifest(as_of: date, champions: dict, missing_tasks: list[str], snapshot_info: dict, catalog,
                  previous_as_of: date | None, *, rows_in: int, scored: int, cross_sell_pairs: int, offers: int,
                  timings: dict, engine: str, uplift=None) -> dict:
    return {
        "format": 1,
        "as_of": as_of.isoformat(),
        "created_at": datetime.now(UTC).isoformat(),
        "engine": engine,
        "models": {t: {"name": c.name, "version": c.version, "source": c.source} for t, c in champions.items()},
        "missing_tasks": missing_tasks,
        "uplift_model": ({"name": uplift.name, "version": uplift.version, "source": uplift.source}
                         if uplift is not None else None),
        "snapshot": snapshot_info,
        "catalog_version": getattr(catalog, "version", None),
        "previous_as_of": previous_as_of.isoformat() if previous_as_of else None,
        "rows": {"in": int(rows_in), "scored": int(scored),
                 "quarantined": int(snapshot_info.get("rows_quarantined", 0)),
                 "cross_sell_pairs": int(cross_sell_pairs), "offers": int(offers)},
        "timings": timings,
    }


def decision_summary(decisions: pd.DataFrame) -> dict:
    """Decisions logged by a run, per arm, and how many were shown an offer."""
    return {"logged": len(decisions),
            "per_arm": {str(a): int(n) for a, n in decisions["arm"].value_counts().sort_index().items()},
            "shown_an_offer": int(decisions["offer_id"].notna().sum())}


def run_scoring(snapshot: pd.DataFrame, snapshot_info: dict, champions: dict, catalog, contacts, as_of: date,
                root: Path, *, window_days: int, k: int = 3, progress: Callable[[int], None] | None = None,
                before_swap: Callable[[Path], None] | None = None, timings: dict | None = None,
                decision=None, log_decisions: Callable[[pd.DataFrame], None] | None = None,
                uplift=None) -> BatchResult:
    """Score, reconcile, write atomically. Pure of any registry or engine access.
    ``timings`` (seconds of earlier steps, e.g. the feature build) go into the manifest."""
    timings = dict(timings or {})
    t0 = time.perf_counter()
    removed = clean_abandoned(root) if root.exists() else 0
    if removed:
        log.warning("removed %d staging director%s left by an interrupted run", removed, "y" if removed == 1 else "ies")
    outputs = score_snapshot(snapshot, champions, catalog, as_of, window_days=window_days, contacts=contacts, k=k,
                             progress=progress, decision=decision, uplift=uplift)
    timings["score_seconds"] = round(time.perf_counter() - t0, 3)
    reconcile(snapshot, outputs.scores)
    prev_day, prev = previous_scores(root, as_of)
    migration = segment_migration(prev, outputs.scores)
    manifest = base_manifest(as_of, champions, outputs.missing_tasks, snapshot_info, catalog, prev_day,
                             rows_in=len(snapshot), scored=len(outputs.scores), cross_sell_pairs=len(outputs.cross_sell),
                             offers=len(outputs.offers), timings=timings, engine="duckdb", uplift=uplift)
    if outputs.decisions is not None and log_decisions is not None:  # durable before the outputs are published
        t1 = time.perf_counter()
        log_decisions(outputs.decisions)
        manifest["timings"]["log_decisions_seconds"] = round(time.perf_counter() - t1, 3)
        manifest["decisions"] = decision_summary(outputs.decisions)
    final = write_outputs(root, as_of, outputs, migration, manifest, before_swap=before_swap)
    return BatchResult(final, json.loads((final / "manifest.json").read_text()), outputs)
