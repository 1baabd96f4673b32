"""Feature snapshots on disk: ``<root>/as_of=YYYY-MM-DD/part-*.parquet`` plus metadata.

``<root>/_schema.json`` holds the dataset's feature set (names, dtypes, order,
fingerprint); every snapshot under a root must match it, so a model trained on one
snapshot can score another. ``<root>/as_of=.../_snapshot.json`` records how the snapshot
was built (engine, source row counts, quarantine, timings). Snapshots are written aside
and swapped in whole (``replace_directory``): readers never see a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from cvm.engines import replace_directory
from features.definitions import FeatureSet

SCHEMA_FILE = "_schema.json"
META_FILE = "_snapshot.json"


class SchemaMismatchError(RuntimeError):
    """A new snapshot's feature set differs from the one already under the root."""


class EmptySnapshotError(RuntimeError):
    """No customer has an order before as_of: an empty window is an error, not a result."""


def partition_dir(root: Path, as_of: date) -> Path:
    return root / f"as_of={as_of.isoformat()}"


def read_schema(root: Path) -> dict | None:
    path = root / SCHEMA_FILE
    return json.loads(path.read_text()) if path.exists() else None


def check_schema(root: Path, fs: FeatureSet, *, replace: bool = False) -> None:
    """Refuse to mix feature sets under one root unless ``replace`` (which drops old snapshots)."""
    existing = read_schema(root)
    if existing is None or existing["fingerprint"] == fs.fingerprint():
        return
    if not replace:
        old = [c["name"] for c in existing["columns"]]
        added = [n for n in fs.names if n not in old]
        removed = [n for n in old if n not in fs.names]
        raise SchemaMismatchError(
            f"{root} holds snapshots of feature set {existing['fingerprint']}; this build declares "
            f"{fs.fingerprint()} (added: {added or 'none'}, removed: {removed or 'none'}, or dtypes/order "
            "changed). Rebuild every snapshot with --replace-schema, or write elsewhere with --out."
        )
    for old_dir in root.glob("as_of=*"):
        shutil.rmtree(old_dir)


def write_snapshot(root: Path, as_of: date, fs: FeatureSet, write: Callable[[Path], None],
                   metadata: dict, *, replace_schema: bool = False) -> tuple[Path, int]:
    """Write one snapshot: ``write(staged_dir)`` produces the Parquet parts.

    Returns the snapshot directory and its row count. The previous snapshot of the same
    as_of stays readable until the new one is complete and swapped in.
    """
    root.mkdir(parents=True, exist_ok=True)
    check_schema(root, fs, replace=replace_schema)
    final = partition_dir(root, as_of)
    staged = root / f".{final.name}.{uuid.uuid4().hex[:8]}"
    try:
        write(staged)
        rows = count_rows(staged)
        if rows == 0:
            raise EmptySnapshotError(
                f"no customer has an order before {as_of.isoformat()}: nothing to build "
                "(choose an as_of after the first transactions)")
        written = pq.read_schema(next(iter(sorted(staged.glob("*.parquet")))))
        if written.names != fs.names:
            raise RuntimeError(f"builder wrote columns {written.names}, declared {fs.names}")
        meta = {**metadata, "rows": rows, "fingerprint": fs.fingerprint(), "as_of": as_of.isoformat()}
        _write_json(staged / META_FILE, meta)
        _write_json(root / SCHEMA_FILE, fs.to_dict())
        replace_directory(staged, final)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final, rows


def count_rows(directory: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in directory.glob("*.parquet"))


def read_snapshot(root: Path, as_of: date, columns: list[str] | None = None) -> pd.DataFrame:
    path = partition_dir(root, as_of)
    if not path.exists():
        raise FileNotFoundError(f"no feature snapshot for as_of {as_of.isoformat()} under {root}")
    table = pads.dataset(str(path), format="parquet").to_table(columns=columns)
    return table.to_pandas().sort_values("customer_id", kind="stable").reset_index(drop=True)


def read_metadata(root: Path, as_of: date) -> dict:
    return json.loads((partition_dir(root, as_of) / META_FILE).read_text())


def list_snapshots(root: Path) -> list[date]:
    return sorted(date.fromisoformat(p.name.split("=", 1)[1]) for p in root.glob("as_of=*") if p.is_dir())


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)
