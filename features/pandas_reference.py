"""A straightforward pandas implementation of the core features.

Two uses: an independent oracle for the Ibis builder in tests (same contract, written
the obvious way), and the baseline the feature benchmark must beat by 10x. It is kept
deliberately plain: read the lines, group by order, group by customer.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from base.dates import cutoff
from features.definitions import SEGMENT_GRID


def _score(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """1 + floor(5 * (customers strictly worse) / n), ties share a score."""
    ranked = values.rank(method="min", ascending=higher_is_better) - 1
    return (1 + np.floor(5 * ranked / len(values))).astype("int64")


def core_features(transactions: pd.DataFrame, as_of: date, window_days: int = 365) -> pd.DataFrame:
    """recency_days, tenure_days, frequency, monetary, r/f/m scores and rfm_segment.

    ``transactions`` has customer_id, order_id, timestamp, amount (one row per line).
    """
    cut = pd.Timestamp(cutoff(as_of))
    lines = transactions[transactions["timestamp"] < cut]
    orders = lines.groupby(["customer_id", "order_id"], as_index=False, sort=False).agg(
        order_ts=("timestamp", "min"), amount=("amount", "sum"))
    orders["amount"] = orders["amount"].round(6)  # as the builder: money to a millionth
    orders["order_date"] = orders["order_ts"].dt.normalize()
    in_window = orders["order_ts"] >= cut - timedelta(days=window_days)
    orders["w_order"] = in_window.astype("int64")
    orders["w_amount"] = orders["amount"].where(in_window, 0.0)
    cust = orders.groupby("customer_id").agg(
        last=("order_date", "max"), first=("order_date", "min"),
        frequency=("w_order", "sum"), monetary=("w_amount", "sum"))
    out = pd.DataFrame({
        "customer_id": cust.index.astype(str),
        "recency_days": (cut - cust["last"]).dt.days.astype("int64").to_numpy(),
        "tenure_days": (cut - cust["first"]).dt.days.astype("int64").to_numpy(),
        "frequency": cust["frequency"].astype("int64").to_numpy(),
        "monetary": cust["monetary"].astype("float64").round(6).to_numpy(),
    })
    out["r_score"] = _score(out["recency_days"], higher_is_better=False)
    out["f_score"] = _score(out["frequency"])
    out["m_score"] = _score(out["monetary"].round(2))
    fm = (out["f_score"] + out["m_score"] + 1) // 2
    grid = {(r, i + 1): name for r, row in SEGMENT_GRID.items() for i, name in enumerate(row)}
    out["rfm_segment"] = [grid[(r, f)] for r, f in zip(out["r_score"], fm)]
    return out.sort_values("customer_id", kind="stable").reset_index(drop=True)
