"""Segment membership, pure: tables in, tables out, as_of explicit.

* ``count_events``: the event counts the segments read, from the events and transaction lines
  before 00:00 of as_of (``base.dates.cutoff``) and at or after that instant minus the window;
* ``evaluate``: (segments, features, scores or None, event counts, as_of) -> one row per
  (customer_id, segment) for every customer of the feature table;
* ``evaluate_one``: the segments of one customer's vector (a dict of features and scores; the
  service's real-time re-evaluation), through the same ``matches`` as a table;
* ``sizes``: per segment its size, share, and entries and exits against earlier membership.

A comparison with a missing value is false and ``not`` negates its child's result (see
``scoring.segments.definitions``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from base.dates import cutoff
from scoring.segments.definitions import (
    PURCHASE,
    EventCount,
    Leaf,
    Node,
    Segment,
    event_counts_of,
    leaves,
)

MEMBER_COLUMNS = ("customer_id", "segment")
SIZE_COLUMNS = ("segment", "size", "share", "entries", "exits", "previous_size")


@dataclass(frozen=True)
class EventCounts:
    """Per customer, the number of events of each ``EventCount`` (columns named by its ``key``) as of
    ``as_of``. A customer without a row has none."""

    as_of: date
    table: pd.DataFrame  # customer_id and one int64 column per key


def _window(frame: pd.DataFrame, as_of: date, days: int) -> pd.Series:
    """Rows with timestamp in [cutoff(as_of) - days, cutoff(as_of)): never the day of as_of itself."""
    end = pd.Timestamp(cutoff(as_of))
    ts = pd.to_datetime(frame["timestamp"])
    return (ts >= end - timedelta(days=days)) & (ts < end)


def count_events(counts: Sequence[EventCount], as_of: date, *, events: pd.DataFrame | None = None,
                 transactions: pd.DataFrame | None = None) -> EventCounts:
    """The ``counts`` as of ``as_of``. ``events`` has customer_id, timestamp, event_type;
    ``transactions`` (order lines) customer_id, order_id, timestamp and, for a category, category.
    A purchase is an order, at the time of its first line before as_of (as ``orders_<N>d``); with a
    category, an order with a line of that category. ``ValueError`` when a table a count needs is
    missing. Rows at or after 00:00 of as_of are ignored whatever the caller passed."""
    end = pd.Timestamp(cutoff(as_of))
    columns: dict[str, pd.Series] = {}
    orders = None
    for count in counts:
        if count.type == PURCHASE:
            if transactions is None:
                raise ValueError(f"{count.text()}: no transactions given to count purchases from")
            if orders is None:
                lines = transactions[pd.to_datetime(transactions["timestamp"]) < end]
                first = lines.groupby(["customer_id", "order_id"], sort=False)["timestamp"].transform("min")
                orders = lines.assign(timestamp=first)
            rows = orders[_window(orders, as_of, count.within_days)]
            if count.category is not None:
                if "category" not in rows.columns:
                    raise ValueError(f"{count.text()}: the transactions have no category")
                rows = rows[rows["category"] == count.category]
            columns[count.key] = rows.groupby("customer_id")["order_id"].nunique()
        else:
            if events is None:
                raise ValueError(f"{count.text()}: the dataset has no events table (only purchases, its orders, "
                                 "can be counted)")
            rows = events[_window(events, as_of, count.within_days) & (events["event_type"] == count.type)]
            columns[count.key] = rows.groupby("customer_id").size()
    if not columns:
        return EventCounts(as_of, pd.DataFrame({"customer_id": pd.Series([], dtype=object)}))
    table = pd.DataFrame(columns).fillna(0).astype("int64")
    table.index = table.index.astype(str)
    table = table.rename_axis("customer_id").reset_index().sort_values("customer_id", kind="stable")
    return EventCounts(as_of, table.reset_index(drop=True))


def _missing_counts(segments: Sequence[Segment], columns) -> list[EventCount]:
    have = set(columns)
    out = []
    for count in event_counts_of(list(segments)):
        fallbacks = {f for s in segments for leaf in leaves(s.where) if leaf.count == count for f in leaf.fallbacks}
        if count.key not in have and not (fallbacks & have):
            out.append(count)
    return out


def counts_needed(segments: Sequence[Segment], feature_columns) -> list[EventCount]:
    """The event counts the segments read that the feature table does not hold: what the caller
    must count from the sources (``count_events``) before ``evaluate``."""
    return _missing_counts(segments, feature_columns)


def customer_table(segments: Sequence[Segment], features: pd.DataFrame, scores: pd.DataFrame | None,
                   counts: EventCounts | None, *, as_of: date) -> pd.DataFrame:
    """One row per customer of ``features`` (as of ``as_of``) with the scores' columns and the event
    counts joined on customer_id: what the segments are evaluated on. The feature table's RFM
    segment is kept (the batch scores carry the same). ``ValueError`` when the tables are of
    another date or a count the segments read is neither a feature nor in ``counts``."""
    if "as_of" in features.columns and len(features):
        days = set(pd.to_datetime(features["as_of"]).dt.date)
        if days != {as_of}:
            raise ValueError(f"the feature table is as of {', '.join(sorted(map(str, days)))}, not {as_of}")
    if counts is not None and counts.as_of != as_of:
        raise ValueError(f"the event counts are as of {counts.as_of}, not {as_of}")
    table = features.reset_index(drop=True).copy()
    table["customer_id"] = table["customer_id"].astype(str)
    if scores is not None and len(scores):
        if "as_of" in scores.columns and set(pd.to_datetime(scores["as_of"]).dt.date) != {as_of}:
            raise ValueError(f"the scores are not as of {as_of}")
        extra = [c for c in scores.columns if c not in table.columns and c != "customer_id"]
        right = scores[["customer_id", *extra]].assign(customer_id=scores["customer_id"].astype(str))
        table = table.merge(right, on="customer_id", how="left", validate="one_to_one")
    if counts is not None and len(counts.table.columns) > 1:
        extra = [c for c in counts.table.columns if c != "customer_id" and c not in table.columns]
        right = counts.table[["customer_id", *extra]]
        table = table.merge(right, on="customer_id", how="left", validate="one_to_one")
        table[extra] = table[extra].fillna(0).astype("int64")  # no row: no events
    missing = _missing_counts(segments, table.columns)
    if missing:
        raise ValueError("event counts not given: " + ", ".join(c.text() for c in missing)
                         + " (count them with count_events)")
    return table


def _column(leaf: Leaf, table: pd.DataFrame) -> pd.Series | None:
    for name in (leaf.column, *leaf.fallbacks):
        if name in table.columns:
            return table[name]
    if leaf.count is not None:
        raise ValueError(f"no count of {leaf.count.text()} ({leaf.count.key}) in the customer's values")
    return None  # a score (or feature) the table does not have: missing for everyone


def _leaf(leaf: Leaf, table: pd.DataFrame) -> np.ndarray:
    col = _column(leaf, table)
    if col is None:
        return np.zeros(len(table), dtype=bool) if leaf.op != "is_null" else np.ones(len(table), dtype=bool)
    missing = col.isna().to_numpy(dtype=bool)
    if leaf.op == "is_null":
        return missing
    if leaf.op == "not_null":
        return ~missing
    if leaf.op in ("in", "not_in"):
        hit = col.isin(list(leaf.value)).to_numpy(dtype=bool)  # type: ignore[arg-type]
        return np.where(missing, False, hit if leaf.op == "in" else ~hit)
    v = leaf.value
    if isinstance(v, str):
        values = col.astype(object).to_numpy()
        out = values == v if leaf.op == "==" else values != v
    else:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        missing = missing | np.isnan(values)  # text that is no number is no match either
        with np.errstate(invalid="ignore"):
            out = {"==": values == v, "!=": values != v, ">": values > v, ">=": values >= v,
                   "<": values < v, "<=": values <= v}[leaf.op]
    return np.where(missing, False, np.asarray(out, dtype=bool))


def matches(cond: Leaf | Node, table: pd.DataFrame) -> np.ndarray:
    """Which rows satisfy ``cond``: a comparison with a missing value is false; ``not`` negates its
    child's result; ``and`` / ``or`` of the children's results."""
    if isinstance(cond, Leaf):
        return _leaf(cond, table)
    parts = [matches(c, table) for c in cond.children]
    if cond.kind == "not":
        return ~parts[0]
    return np.logical_and.reduce(parts) if cond.kind == "and" else np.logical_or.reduce(parts)


def membership(segments: Sequence[Segment], table: pd.DataFrame) -> pd.DataFrame:
    """(customer_id, segment) for every customer of ``table`` in every segment, sorted by segment
    (in the file's order) and customer."""
    frames = [pd.DataFrame({"customer_id": table.loc[matches(s.where, table), "customer_id"].astype(str).to_numpy(),
                            "segment": s.name}) for s in segments]
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in MEMBER_COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    order = {s.name: i for i, s in enumerate(segments)}
    out = out.assign(_o=out["segment"].map(order)).sort_values(["_o", "customer_id"], kind="stable")
    return out.drop(columns="_o").reset_index(drop=True)


def evaluate(segments: Sequence[Segment], features: pd.DataFrame, scores: pd.DataFrame | None,
             counts: EventCounts | None, *, as_of: date) -> pd.DataFrame:
    """Membership (customer_id, segment) of every customer of the feature snapshot ``features``
    as of ``as_of``, with the batch ``scores`` of that date (None: score conditions are false) and
    the event ``counts`` the features do not hold (``counts_needed``, ``count_events``)."""
    return membership(segments, customer_table(segments, features, scores, counts, as_of=as_of))


def evaluate_one(segments: Sequence[Segment], row: Mapping[str, object]) -> frozenset[str]:
    """The segments one customer's vector is in: a dict of features, scores and event counts (an
    event count under its key, or the feature that keeps it). The same ``matches`` as a table."""
    table = pd.DataFrame([dict(row)])
    return frozenset(s.name for s in segments if bool(matches(s.where, table)[0]))


def sizes(segments: Sequence[Segment], members: pd.DataFrame, customers: int,
          previous: pd.DataFrame | None) -> pd.DataFrame:
    """Per segment: size, share of the customers, and entries and exits since ``previous`` membership
    (None: no earlier date; entries, exits and the previous size are then null). A segment the
    previous membership did not have starts from nobody."""
    rows = []
    for s in segments:
        now = set(members.loc[members["segment"] == s.name, "customer_id"])
        if previous is None:
            entries = exits = before = None
        else:
            was = set(previous.loc[previous["segment"] == s.name, "customer_id"])
            entries, exits, before = len(now - was), len(was - now), len(was)
        rows.append({"segment": s.name, "size": len(now), "share": len(now) / customers if customers else 0.0,
                     "entries": entries, "exits": exits, "previous_size": before})
    frame = pd.DataFrame(rows, columns=list(SIZE_COLUMNS))
    frame["size"] = frame["size"].astype("int64")
    frame["share"] = frame["share"].astype("float64")
    for col in ("entries", "exits", "previous_size"):
        frame[col] = frame[col].astype("Int64")
    return frame
