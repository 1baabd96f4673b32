"""Feature snapshots on disk: ``<root>/as_of=YYYY-MM-DD/part-*.parquet`` plus metadata.

``<root>/_schema.json`` holds the dataset's feature set (names, dtypes, order, the
configuration and the fingerprint of both); every snapshot under a root must match it, so a
model trained on one snapshot can score another. ``<root>/as_of=.../_snapshot.json``
records how the snapshot was built (engine, feature configuration, source row counts,
quarantine, timings). ``<root>/as_of=.../_contacts/`` holds the campaign contacts before
``as_of`` (golden customer ids), which the offer engine's contact policy reads: what
scoring needs from the raw sources travels with the snapshot. ``_fresh/`` and
``_open_carts/`` are what the service brings up to the last event with (``features.fresh``). Files and folders whose
name starts with ``_`` or ``.`` are not feature rows (Arrow and Spark skip them too).
Snapshots are written aside and swapped in whole (``replace_directory``): readers never
see a partial one.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from base.atomic import replace_directory, write_json
from base.dates import partition_dir, partitions
from features.config import FeatureConfig
from features.definitions import FeatureSet

SCHEMA_FILE = "_schema.json"
META_FILE = "_snapshot.json"
CONTACTS_DIR = "_contacts"
#: base(as_of + 1) of ``features.fresh``: tomorrow's features over this morning's data
FRESH_DIR = "_fresh"
#: the carts an order today could rescue (``features.build.open_carts``)
OPEN_CARTS_DIR = "_open_carts"
#: the columns of ``_contacts/``
CONTACT_COLUMNS = ("customer_id", "campaign_id", "timestamp")


class SchemaMismatchError(RuntimeError):
    """A new snapshot's feature set differs from the one already under the root."""


class EmptySnapshotError(RuntimeError):
    """No customer has an order before as_of: an empty window is an error, not a result."""


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
    for day in partitions(root):
        shutil.rmtree(partition_dir(root, day))


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
        written = pq.read_schema(data_files(staged)[0])
        if written.names != fs.names:
            raise RuntimeError(f"builder wrote columns {written.names}, declared {fs.names}")
        meta = {**metadata, "rows": rows, "fingerprint": fs.fingerprint(), "as_of": as_of.isoformat(),
                "feature_config": fs.config.model_dump(mode="json")}
        if (staged / CONTACTS_DIR).exists():
            meta["contacts"] = count_rows(staged / CONTACTS_DIR)
        write_json(staged / META_FILE, meta)
        write_json(root / SCHEMA_FILE, fs.to_dict())
        replace_directory(staged, final)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final, rows


def data_files(directory: Path) -> list[Path]:
    """The Parquet parts of a snapshot (or of its contacts), in name order: bookkeeping files
    and folders (``_schema.json``, ``_contacts/``, ``.crc``...) are not data."""
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(("_", ".")) and p.is_file())


def count_rows(directory: Path) -> int:
    """Rows of the Parquet parts in ``directory``, from their footers (no data read)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in data_files(directory))


def read_snapshot(root: Path, as_of: date, columns: list[str] | None = None) -> pd.DataFrame:
    path = partition_dir(root, as_of)
    if not path.exists():
        raise FileNotFoundError(f"no feature snapshot for as_of {as_of.isoformat()} under {root}")
    table = pads.dataset(str(path), format="parquet").to_table(columns=columns)
    return table.to_pandas().sort_values("customer_id", kind="stable").reset_index(drop=True)


def read_metadata(root: Path, as_of: date) -> dict:
    return json.loads((partition_dir(root, as_of) / META_FILE).read_text())


def list_snapshots(root: Path) -> list[date]:
    return partitions(root)


def read_contacts(snapshot_dir: Path) -> pd.DataFrame | None:
    """The contacts published with a snapshot (``CONTACT_COLUMNS``); None when the dataset has none."""
    path = snapshot_dir / CONTACTS_DIR
    if not path.exists():
        return None
    frame = pads.dataset(str(path), format="parquet").to_table(columns=list(CONTACT_COLUMNS)).to_pandas()
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["campaign_id"] = frame["campaign_id"].astype(str)
    stamps = pd.to_datetime(frame["timestamp"])
    if stamps.dt.tz is not None:  # an engine that wrote zoned timestamps: UTC, as the contract says
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    frame["timestamp"] = stamps
    return frame


def feature_config(meta: dict) -> FeatureConfig:
    """The feature configuration a snapshot was built with (from its metadata): the windows
    its values cover. A snapshot without it predates this record and must be rebuilt."""
    raw = meta.get("feature_config")
    if raw is None:
        raise SchemaMismatchError(f"snapshot as_of {meta.get('as_of')} does not record its feature configuration "
                                  "(built by an older version): rebuild it with cvm features build")
    return FeatureConfig.model_validate(raw)
