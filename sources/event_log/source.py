"""The event log as the nightly batch's source: its events join the dataset's ``events`` table
and its purchases its ``transactions``, so a purchase posted today is in tonight's features.

``source_frames`` turns the log's rows into the source contract's columns (pure): every event
is an ``events`` row (``event_type`` = its type); a ``purchase`` is also a ``transactions``
row (its ``order_id``, ``amount``, optional ``category``, ``quantity``, ``product_id``,
``channel``). ``with_event_log`` appends them to the linked source tables: the log's
customers are golden ids already (``profiles.events`` resolved them), so they are added after
identity resolution, and with ``source_system`` = ``event_log``. Each table keeps its own
columns (one the log lacks is null); a table the dataset does not have is left out, since
its features were not declared.
"""

from __future__ import annotations

import json

import ibis
import pandas as pd

#: source_system of the rows that come from the event log
SOURCE_SYSTEM = "event_log"
#: purchase properties copied to the transaction row, with their types
_PURCHASE = {"order_id": "string", "amount": "float64", "category": "string", "quantity": "float64",
             "product_id": "string", "channel": "string"}


def source_frames(log: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``events`` and ``transactions`` rows (contract columns) of the event log's rows."""
    ts = pd.to_datetime(log["occurred_us"].astype("int64"), unit="us")
    events = pd.DataFrame({"customer_id": log["customer_id"].astype(str), "timestamp": ts,
                           "event_type": log["event_type"].astype(str), "source_system": SOURCE_SYSTEM})
    buys = log[log["event_type"] == "purchase"]
    props = [json.loads(p) for p in buys["properties"]]
    tx = pd.DataFrame({"customer_id": buys["customer_id"].astype(str).to_numpy(),
                       "timestamp": ts[buys.index].to_numpy()})
    for col, kind in _PURCHASE.items():
        values = [p.get(col) for p in props]
        tx[col] = (pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce").astype("float64")
                   if kind == "float64" else pd.Series([None if v is None else str(v) for v in values], dtype="object"))
    tx["source_system"] = SOURCE_SYSTEM
    return {"events": events.reset_index(drop=True), "transactions": tx}


def _aligned(frame: pd.DataFrame, schema: ibis.Schema, engine) -> ibis.Table:
    """``frame`` on ``engine`` as a table of exactly ``schema`` (its columns, order and types;
    a column the log lacks is a typed null)."""
    import pyarrow as pa

    arrow = schema.to_pyarrow()
    columns = []
    for field in arrow:
        if field.name in frame.columns:
            source = frame[field.name]
        elif field.name == "_record":  # linked tables keep the source record: the log's is the customer
            source = frame["customer_id"]
        else:
            columns.append(pa.nulls(len(frame), type=field.type))
            continue
        columns.append(pa.array(source.to_numpy(dtype=object), from_pandas=True).cast(field.type))
    return engine.register(pa.Table.from_arrays(columns, schema=arrow))


def with_event_log(tables: dict[str, ibis.Table], log, engine) -> tuple[dict[str, ibis.Table], dict[str, int]]:
    """``tables`` with the rows of the event ``log`` (``EventLog`` or ``RedisEventLog``) appended
    (where the dataset has the table), and how many rows each got. No log yet: the tables as they are."""
    if not log.exists():
        return tables, {}
    frame = log.frame()
    if frame.empty:
        return tables, {}
    out, added = dict(tables), {}
    for name, rows in source_frames(frame).items():
        if name not in tables or rows.empty:
            continue
        table = tables[name]
        out[name] = table.union(_aligned(rows, table.schema(), engine))
        added[name] = len(rows)
    return out, added
