"""Segment membership: a table of customers (features, and scores when there are any) in, one row
per (customer, segment) out. Pure; the nightly batch, the CLI and the service's real-time
re-evaluation (``evaluate_one``) all run ``matches``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from scoring.segments.definitions import Leaf, Node, Segment

MEMBER_COLUMNS = ("customer_id", "segment")
SIZE_COLUMNS = ("segment", "size", "share", "entries", "exits", "previous_size")


def _leaf(leaf: Leaf, table: pd.DataFrame) -> np.ndarray:
    if leaf.column not in table.columns:  # a score the batch did not produce: nobody satisfies it
        return np.zeros(len(table), dtype=bool)
    col = table[leaf.column]
    missing = col.isna().to_numpy()
    if leaf.op == "is_null":
        return missing
    if leaf.op == "not_null":
        return ~missing
    if leaf.op in ("in", "not_in"):
        hit = col.isin(list(leaf.value)).to_numpy()  # type: ignore[arg-type]
        return np.where(missing, False, hit if leaf.op == "in" else ~hit)
    values = col.to_numpy(dtype=object if col.dtype == object or isinstance(leaf.value, str) else float,
                          na_value=None if isinstance(leaf.value, str) else np.nan)
    v = leaf.value
    with np.errstate(invalid="ignore"):
        if leaf.op == "==":
            out = values == v
        elif leaf.op == "!=":
            out = values != v
        elif leaf.op == ">":
            out = values > v
        elif leaf.op == ">=":
            out = values >= v
        elif leaf.op == "<":
            out = values < v
        else:
            out = values <= v
    return np.where(missing, False, np.asarray(out, dtype=bool))


def matches(cond: Leaf | Node, table: pd.DataFrame) -> np.ndarray:
    """Which rows satisfy ``cond`` (a comparison with a missing value is false; ``not`` negates)."""
    if isinstance(cond, Leaf):
        return _leaf(cond, table)
    parts = [matches(c, table) for c in cond.children]
    if cond.kind == "not":
        return ~parts[0]
    return np.logical_and.reduce(parts) if cond.kind == "and" else np.logical_or.reduce(parts)


def customer_table(features: pd.DataFrame, scores: pd.DataFrame | None) -> pd.DataFrame:
    """Features with the scores' columns joined on customer_id (scores win for the RFM segment, as
    the nightly batch wrote it)."""
    if scores is None or scores.empty:
        return features.reset_index(drop=True)
    extra = [c for c in scores.columns if c not in features.columns and c != "customer_id"]
    return features.merge(scores[["customer_id", *extra]], on="customer_id", how="left")


def membership(segments: Sequence[Segment], table: pd.DataFrame) -> pd.DataFrame:
    """(customer_id, segment) for every customer of ``table`` in every segment, sorted."""
    frames = [pd.DataFrame({"customer_id": table.loc[matches(s.where, table), "customer_id"].astype(str).to_numpy(),
                            "segment": s.name}) for s in segments]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(MEMBER_COLUMNS))
    return out.sort_values(["segment", "customer_id"], kind="stable").reset_index(drop=True)


def evaluate_one(segments: Sequence[Segment], row: Mapping[str, object]) -> frozenset[str]:
    """The segments one customer's vector (a dict of features and scores) is in."""
    table = pd.DataFrame([dict(row)])
    return frozenset(s.name for s in segments if bool(matches(s.where, table)[0]))


def sizes(segments: Sequence[Segment], members: pd.DataFrame, customers: int,
          previous: pd.DataFrame | None) -> pd.DataFrame:
    """Per segment: size, share of the customers, and entries and exits since ``previous`` membership
    (None: no earlier date; entries and exits are then null)."""
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
    for col in ("entries", "exits", "previous_size"):
        frame[col] = frame[col].astype("Int64")
    return frame
