"""Readers of the ground truth a synthetic dataset carries under ``<dataset>/truth/``:
``read_response`` (each person's true response to an offer per category) and
``person_of_record`` (the person behind each customer id of the source tables)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd

RESPONSE_COLUMNS = ("person_id", "category", "kind", "p_control", "p_treated")


def _truth(dataset_dir: str | Path) -> Path:
    truth = Path(dataset_dir).expanduser() / "truth"
    if not truth.is_dir():
        raise FileNotFoundError(f"{truth} does not exist: not a synthetic dataset written by `cvm synth`")
    return truth


def read_response(dataset_dir: str | Path) -> pd.DataFrame:
    """The true response model: one row per person and category, ordered by person then
    category, with columns ``person_id`` (int64), ``category``, ``kind`` (persuadable,
    sure_thing, lost_cause or sleeping_dog), ``p_control`` and ``p_treated`` (float64: the
    chance to buy in the category within the horizon without / with a contact offering it).

    ``attrs["horizon_days"]`` holds the horizon and ``attrs["as_of"]`` the day (ISO date,
    the window's last) at whose end the contact is assumed to be made.
    """
    folder = _truth(dataset_dir) / "response"
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no {folder}/part-*.parquet: the dataset was written by a generator "
                                "older than ground-truth responses (GENERATOR_VERSION 2); regenerate it")
    tables = [pq.read_table(p) for p in parts]
    meta = tables[0].schema.metadata or {}
    df = pa.concat_tables(tables).select(list(RESPONSE_COLUMNS)).to_pandas()
    df.attrs["horizon_days"] = int(meta[b"horizon_days"]) if b"horizon_days" in meta else None
    df.attrs["as_of"] = meta[b"as_of"].decode() if b"as_of" in meta else None
    return df


def person_of_record(dataset_dir: str | Path) -> pd.DataFrame:
    """Who is behind each source record: columns ``source_system``, ``customer_id`` (the id
    exactly as in the ``customer_id`` column of transactions, events, contacts, responses and
    customers, and the ``source_id`` of identities; unique across systems) and ``person_id``
    (int64, as in ``read_response``)."""
    table = pq.read_table(_truth(dataset_dir) / "records.parquet",
                          columns=["source_system", "source_id", "person_id"])
    return table.rename_columns(["source_system", "customer_id", "person_id"]).to_pandas()
