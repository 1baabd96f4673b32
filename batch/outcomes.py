"""Outcomes from a file (CSV or Parquet) into the decision log: what ``POST /outcomes``
does, for a file of any length.

Every row is checked before anything is written (the same fields and rules as the API:
``outcome_id``, ``decision_id``, ``type``, ``timestamp``, optional ``value``); a bad row, or
a decision id the log does not know, refuses the whole file with a message naming the row
and the field. Duplicated ``outcome_id`` values (in the file or already logged) are skipped
and counted, so ingesting a file twice writes it once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from base.errors import InputError
from scoring.decisions import Outcome, OutcomeCounts, OutcomeError

FIELDS = ("outcome_id", "decision_id", "type", "timestamp", "value")


def read_outcomes(path: Path) -> list[Outcome]:
    """The file's outcomes, validated; ``InputError`` naming every bad row (up to 10)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".txt"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        raise InputError(f"{path}: expected a .csv or .parquet file")
    missing = [c for c in FIELDS[:4] if c not in frame.columns]
    extra = [c for c in frame.columns if c not in FIELDS]
    if missing or extra:
        raise InputError(f"{path}: " + "; ".join(
            ([f"missing column(s) {missing}"] if missing else []) + ([f"unknown column(s) {extra}"] if extra else []))
            + f" (columns are {list(FIELDS)})")
    out, problems = [], []
    for i, row in enumerate(frame.to_dict("records")):
        data = {k: v for k, v in row.items() if not (k == "value" and (v == "" or pd.isna(v)))}
        for k in ("outcome_id", "decision_id"):
            if k in data and not isinstance(data[k], str):
                data[k] = str(data[k])
        try:
            out.append(Outcome.model_validate(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "row"
            problems.append(f"row {i + 2 if path.suffix.lower() != '.parquet' else i}: {where}: {first['msg']}")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise InputError(f"{path}: {len(problems)} bad row(s), nothing was written: {shown}")
    return out


def ingest_outcomes(path: Path, store) -> OutcomeCounts:
    """Validate the whole file, then record it in one transaction."""
    outcomes = read_outcomes(path)
    try:
        return store.record_outcomes(outcomes)
    except OutcomeError as exc:
        raise InputError(f"{path}: {exc}") from None
