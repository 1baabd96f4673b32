"""Load a dataset's tables into an engine: check, type, quarantine, attach categories."""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from base.atomic import replace_directory
from base.engines import Engine
from sources.contract import TABLES
from sources.dataset import Dataset, DatasetError, TableFiles
from sources.validate import (
    ValidationConfig,
    check_required_columns,
    clean_rows,
    duplicate_candidates,
    quarantined_rows,
    validate_table,
)

log = logging.getLogger(__name__)


@dataclass
class TableReport:
    table: str
    rows_in: int
    rows_clean: int
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def as_dict(self) -> dict:
        return {"rows_in": self.rows_in, "rows_clean": self.rows_clean,
                "rows_quarantined": self.rows_quarantined, "quarantined_by_reason": dict(self.quarantined)}


@dataclass
class Sources:
    """Clean, typed source tables (contract columns) of one dataset on one engine."""

    dataset: Dataset
    engine: Engine
    tables: dict[str, ibis.Table]
    reports: dict[str, TableReport]
    #: the products column transactions got their category from (None: their own column)
    category_from: str | None = None

    def has(self, name: str) -> bool:
        return name in self.tables

    def __getitem__(self, name: str) -> ibis.Table:
        return self.tables[name]

    @property
    def rows_quarantined(self) -> int:
        return sum(r.rows_quarantined for r in self.reports.values())


def read_raw(dataset: Dataset, engine: Engine, table: str) -> ibis.Table:
    tf = dataset.tables[table]
    spec = TABLES[table]
    renames = dataset.config.columns.get(table, {})
    check_required_columns(tf, spec, renames)
    raw = engine.read(list(tf.files), tf.fmt)
    if renames:
        raw = raw.rename({new: old for old, new in renames.items() if old in raw.columns})
    return raw


def load_sources(
    dataset: Dataset,
    engine: Engine,
    *,
    validation: ValidationConfig | None = None,
    quarantine_dir: Path | None = None,
    tables: tuple[str, ...] | None = None,
    category_column: str | None = None,
) -> Sources:
    """Validate every table of ``dataset`` (or the named ``tables``) on ``engine``.

    Missing required columns fail at once (``DatasetError`` naming file and column).
    Bad rows are counted by reason and, when ``quarantine_dir`` is given, written there
    as ``<table>/part-*.parquet`` with their raw values and the reason.
    """
    validation = validation or ValidationConfig()
    wanted = [t for t in (tables or tuple(dataset.tables)) if dataset.has(t)]
    # Check every file's header before reading any data: fail fast.
    for name in wanted:
        check_required_columns(dataset.tables[name], TABLES[name], dataset.config.columns.get(name, {}))

    clean: dict[str, ibis.Table] = {}
    reports: dict[str, TableReport] = {}
    for name in wanted:
        text = dataset.tables[name].fmt == "csv"
        raw = read_raw(dataset, engine, name)
        candidates = None
        if validation.drop_duplicate_rows:
            candidates = duplicate_candidates(raw, TABLES[name])
            # Few rows (values shared by several rows): materialised once on every engine.
            candidates = candidates.cache() if candidates is not None else None
        validated = engine.reuse(validate_table(raw, TABLES[name], validation, text=text, candidates=candidates))
        rejected = quarantined_rows(validated, name)
        if quarantine_dir is not None:
            by_reason = _write_quarantine(engine, rejected, quarantine_dir / name)
        else:
            counts = engine.execute(rejected.group_by("_reason").agg(n=ibis._.count()))
            by_reason = {str(r): int(n) for r, n in zip(counts["_reason"], counts["n"])}
        total = _row_count(dataset.tables[name], engine, raw)
        reports[name] = TableReport(name, total, total - sum(by_reason.values()), by_reason)
        if by_reason:
            log.warning("%s: %d of %d rows quarantined (%s)", name, sum(by_reason.values()), total,
                        ", ".join(f"{r}: {n}" for r, n in sorted(by_reason.items())))
        clean[name] = clean_rows(validated)

    category_from = None
    if "transactions" in clean:
        clean["transactions"], category_from = _attach_category(clean, dataset, category_column)
    return Sources(dataset, engine, clean, reports, category_from)


def _row_count(tf: TableFiles, engine: Engine, raw: ibis.Table) -> int:
    """Rows in the table's files: from Parquet footers (free), else by counting."""
    if tf.fmt == "parquet":
        return sum(pq.ParquetFile(p).metadata.num_rows for p in tf.files)
    return int(engine.execute(raw.count()))


def _write_quarantine(engine: Engine, rows: ibis.Table, final: Path) -> dict[str, int]:
    """Write the rejected rows (one pass over the validated table) and count them by reason.

    The previous quarantine of the table is replaced, or removed when nothing is rejected.
    """
    staged = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}")
    try:
        engine.write_parquet(rows, staged)
        reasons = pads.dataset(str(staged), format="parquet").to_table(columns=["_reason"]).column(0)
        counts = {str(item["values"]): int(item["counts"]) for item in pc.value_counts(reasons).to_pylist()}
        if counts:
            replace_directory(staged, final)
        elif final.exists():
            shutil.rmtree(final)
        return counts
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _attach_category(clean: dict[str, ibis.Table], dataset: Dataset,
                     category_column: str | None) -> tuple[ibis.Table, str | None]:
    """Give transaction lines a ``category`` from the catalog when they lack one (or when
    ``category_column`` asks for a catalog level); return the catalog column used."""
    tx = clean["transactions"]
    column = category_column or dataset.config.category_column
    if "category" in tx.columns and category_column is None:
        return tx, None
    products = clean.get("products")
    if products is None or "product_id" not in tx.columns:
        if category_column is not None:
            raise DatasetError(
                f"category column {column!r} requested but the dataset has no products table "
                "and product_id on transactions")
        return tx, None
    if column not in products.columns:
        raise DatasetError(
            f"products has no column {column!r} to use as category "
            f"(columns: {', '.join(products.columns)}); set category_column in dataset.yaml")
    # One category per product (a catalog may list a product twice): the smallest name.
    catalog = products.group_by("product_id").agg(_cat=products[column].cast("string").min())
    tx = tx.drop("category") if "category" in tx.columns else tx
    joined = tx.left_join(catalog, tx.product_id == catalog.product_id)
    return joined.select(*[tx[c] for c in tx.columns], category=joined["_cat"]), column


def check_sources(dataset: Dataset, home, *, validation: ValidationConfig | None = None
                  ) -> tuple[dict[str, TableReport], Path]:
    """``cvm sources check``: validate every table on an embedded engine (closed after),
    bad rows quarantined under the home. Returns the reports and the quarantine folder."""
    from base.engines import open_engine

    qdir = home.quarantine(dataset.name, ensure=True)
    with open_engine("duckdb", temp_dir=home.tmp(ensure=True)) as engine:
        return load_sources(dataset, engine, validation=validation, quarantine_dir=qdir).reports, qdir
