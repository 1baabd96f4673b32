"""Validation of source tables: contract columns present, typed values, quarantine.

Written as Ibis expressions so that DuckDB and Spark apply the same rules. A row is
either used or quarantined with the first reason that applies; nothing is dropped
silently. Returns (negative amounts) are data, not errors.
"""

from __future__ import annotations

import csv
import gzip
from datetime import datetime
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from sources.contract import ColumnSpec, TableSpec
from sources.dataset import DatasetError, TableFiles

REASON = "_reason"


class ValidationConfig(BaseModel):
    """Row-level rules applied to every source table."""

    model_config = ConfigDict(extra="forbid")

    max_abs_amount: float = Field(1e7, gt=0, description="Money columns beyond +/- this are quarantined.")
    min_timestamp: datetime = Field(datetime(1970, 1, 1), description="Earliest plausible timestamp.")
    max_timestamp: datetime = Field(datetime(2100, 1, 1), description="Latest plausible timestamp.")
    drop_duplicate_rows: bool = Field(
        True, description="Quarantine exact copies of a row (every column equal), keeping the first."
    )


def file_columns(path: Path, fmt: str) -> list[str]:
    """Column names of one file, read from its header only."""
    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:  # type: ignore[operator]
        header = next(csv.reader(fh), None)
    if header is None:
        raise DatasetError(f"{path}: empty file, no header row")
    return [h.strip() for h in header]


def check_required_columns(tf: TableFiles, spec: TableSpec, renames: dict[str, str]) -> list[str]:
    """Fail fast, naming the file and the column, when a required column is missing.

    Returns the contract columns present in every file (after renames)."""
    present: set[str] | None = None
    for path in tf.files:
        cols = [renames.get(c, c) for c in file_columns(path, tf.fmt)]
        missing = [c for c in spec.required_columns if c not in cols]
        if missing:
            raise DatasetError(
                f"{path}: table '{spec.name}' is missing required column"
                f"{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
                f"(found: {', '.join(cols) or 'none'})"
            )
        present = set(cols) if present is None else present & set(cols)
    return sorted(present or set())


def _blank(v: ibis.Value, text: bool) -> ibis.BooleanValue:
    t = v.type()
    if t.is_string():
        return v.isnull() | ((v.strip() if text else v) == "")
    if t.is_floating():
        # Ibis on Spark counts NaN as null; NaN is "not finite", not missing, on every engine.
        return v.isnull() & ~_non_finite(v)
    return v.isnull()


def _non_finite(v: ibis.NumericValue) -> ibis.BooleanValue:
    """True exactly for NaN and +/-inf. Not isnan(): DuckDB folds it to false from Parquet
    statistics, which leave NaN out (duckdb/duckdb#25521)."""
    return ((v - v) != 0).fill_null(False)


_NON_FINITE = ["nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"]


def _non_finite_text(raw: ibis.Value) -> ibis.BooleanValue:
    """Text spelling NaN or infinity: engines disagree on parsing these, so name them here."""
    if not raw.type().is_string():
        return ibis.literal(False)
    return raw.strip().lower().isin(_NON_FINITE).fill_null(False)


def _typed(raw: ibis.Value, col: ColumnSpec, text: bool) -> ibis.Value:
    """The contract-typed value; columns already of the right type pass through untouched
    (typed Parquet is the fast path), text is stripped and parsed."""
    t = raw.type()
    if col.dtype == "string":
        if not t.is_string():
            return raw.cast("string")
        return raw.strip() if text else raw
    if col.dtype == "timestamp":
        if t.is_timestamp():
            return raw if t.timezone is None and t.scale in (None, 6) else raw.cast(dt.Timestamp())
        if t.is_date():
            return raw.cast(dt.Timestamp())
        return raw.cast("string").strip().try_cast(dt.Timestamp())
    target = dt.float64 if col.dtype == "float64" else dt.int64
    if t == target:
        return raw
    if t.is_numeric():
        return raw.cast(target)
    return raw.cast("string").strip().try_cast(target)


def duplicate_candidates(raw: ibis.Table, spec: TableSpec) -> ibis.Table | None:
    """Values of the table's ``dedupe_hint`` columns that more than one row shares.

    Exact duplicates agree on every column, so they can only be among these rows; the
    (costly) comparison of whole rows then runs on a small fraction of the table.
    """
    keys = [k for k in spec.dedupe_hint if k in raw.columns]
    if not keys:
        return None
    return raw.group_by(keys).agg(_n=ibis._.count()).filter(ibis._._n > 1).select(*keys)


def _with_copy_number(raw: ibis.Table, candidates: ibis.Table) -> ibis.Table:
    """``raw`` plus ``_copy``: 0 for a first occurrence, 1, 2... for exact copies of it.

    Rows outside the candidates (an anti-join) cannot be copies; the window that numbers
    copies runs on the candidate rows only (a semi-join). Two independent scans of the
    input cost less than sharing one materialised intermediate between the branches."""
    keys = list(candidates.columns)
    on = [raw[k] == candidates[k] for k in keys]
    plain = raw.anti_join(candidates, on).select(*raw.columns, _copy=ibis.literal(0, type="int64"))
    maybe = raw.semi_join(candidates, on)
    maybe = maybe.select(*raw.columns, _copy=ibis.row_number().over(group_by=[maybe[c] for c in raw.columns]))
    return plain.union(maybe, distinct=False)


def validate_table(raw: ibis.Table, spec: TableSpec, config: ValidationConfig, *, text: bool = False,
                   candidates: ibis.Table | None = None) -> ibis.Table:
    """Add typed contract columns and a ``_reason`` column (null for a usable row).

    ``text`` says the columns are text to parse (CSV) rather than typed (Parquet).
    ``candidates`` (from ``duplicate_candidates``) turns on the search for exact duplicates.
    Returns the contract columns (typed), any extra attribute columns for tables that
    keep them, ``_raw_*``: every input column as read, and ``_reason``.
    """
    columns = list(raw.columns)
    if candidates is not None and config.drop_duplicate_rows:
        raw = _with_copy_number(raw, candidates)
    contract = [c for c in spec.columns if c.name in columns]
    typed = {c.name: _typed(raw[c.name], c, text) for c in contract}
    checks: list[tuple[ibis.BooleanValue, str]] = []
    for c in contract:
        if c.key:
            checks.append((_blank(raw[c.name], text), f"{c.name} is missing"))
    for c in contract:
        if c.dtype == "string" or raw[c.name].type() == typed[c.name].type():
            continue
        unparsed = ~_blank(raw[c.name], True) & typed[c.name].isnull() & ~_non_finite_text(raw[c.name])
        what = {"timestamp": "a valid timestamp", "float64": "a number", "int64": "an integer"}[c.dtype]
        checks.append((unparsed, f"{c.name} is not {what}"))
    for c in contract:
        v = typed[c.name]
        if c.dtype == "float64":
            checks.append((_non_finite(v) | _non_finite_text(raw[c.name]), f"{c.name} is not finite"))
            checks.append((v.abs() > config.max_abs_amount,
                           f"{c.name} is out of range (|x| > {config.max_abs_amount:g})"))
        if c.dtype == "timestamp":
            out = (v < ibis.timestamp(config.min_timestamp)) | (v >= ibis.timestamp(config.max_timestamp))
            checks.append((out, (f"{c.name} is out of range ({config.min_timestamp:%Y-%m-%d}.."
                                f"{config.max_timestamp:%Y-%m-%d})")))
    for c in contract:
        v = typed[c.name]
        if c.allowed:
            checks.append((~_blank(raw[c.name], text) & ~v.isin(list(c.allowed)),
                           f"{c.name} is not one of {', '.join(c.allowed)}"))
        if c.probability:
            checks.append(((v <= 0) | (v >= 1), f"{c.name} is not a probability strictly between 0 and 1"))
    if "_copy" in raw.columns:
        checks.append((raw["_copy"] > 0, "duplicate of another row"))
    reason = ibis.null(dt.string)
    for cond, msg in reversed(checks):
        reason = ibis.ifelse(cond.fill_null(False), ibis.literal(msg), reason)

    extras = [c for c in columns if c not in typed] if spec.keeps_extra_columns else []
    # The raw inputs ride along untouched (free when the column is already typed) and are
    # turned into text only for the few quarantined rows, in ``quarantined_rows``.
    return raw.select(
        **typed,
        **{c: raw[c] for c in extras},
        **{f"_raw_{c}": raw[c] for c in columns},
        **{REASON: reason},
    )


def clean_rows(validated: ibis.Table) -> ibis.Table:
    keep = [c for c in validated.columns if not c.startswith("_raw_") and c != REASON]
    return validated.filter(validated[REASON].isnull()).select(*keep)


def quarantined_rows(validated: ibis.Table, table: str) -> ibis.Table:
    """The rejected rows: the table name, the reason and every input value as text."""
    raw = [c for c in validated.columns if c.startswith("_raw_")]
    q = validated.filter(validated[REASON].notnull())
    return q.select(
        _table=ibis.literal(table),
        _reason=q[REASON],
        **{c.removeprefix("_raw_"): q[c].cast("string") for c in raw},
    )
