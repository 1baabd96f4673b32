"""Labels at the window boundaries: [as_of, as_of + H) includes as_of 00:00, excludes as_of + H."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from training import labels as L

AS_OF = date(2024, 3, 1)
H = 28  # window [2024-03-01, 2024-03-29)
T = pd.Timestamp


@pytest.fixture
def tx(duckdb_engine):
    rows = [
        # customer, order, timestamp, amount, category
        ("stays", "s1", T("2024-02-10 10:00"), 10.0, "grocery"),
        ("stays", "s2", T("2024-03-01 00:00"), 5.0, "dairy"),  # exactly at as_of: inside the window
        ("leaves", "l1", T("2024-02-20 10:00"), 20.0, "grocery"),
        ("leaves", "l2", T("2024-03-29 00:00"), 7.0, "dairy"),  # exactly at as_of + H: outside
        ("busy", "b1", T("2023-12-01 10:00"), 30.0, "bakery"),  # bakery 91 days before as_of: counts as recent
        ("busy", "b2", T("2024-03-05 10:00"), 4.0, "grocery"),
        ("busy", "b2", T("2024-03-05 10:00"), -1.0, "grocery"),  # a return in the same order
        ("busy", "b3", T("2024-03-28 23:59"), 6.0, "bakery"),  # last minute of the window
        ("old", "o1", T("2023-01-15 10:00"), 50.0, "grocery"),  # more than 365 days before as_of
        ("new", "n1", T("2024-03-02 10:00"), 9.0, "grocery"),  # first order inside the window: not a customer yet
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "order_id", "timestamp", "amount", "category"])
    return duckdb_engine.register(df)


def run(engine, expr, key="customer_id"):
    return engine.execute(expr).sort_values(list(key) if isinstance(key, list) else key).set_index(key)


def test_churn(tx, duckdb_engine):
    got = run(duckdb_engine, L.churn_labels(tx, AS_OF, H, activity_window_days=365))
    assert got.label.to_dict() == {"busy": 0, "leaves": 1, "stays": 0}  # "old" is outside the activity window


def test_next_purchase(tx, duckdb_engine):
    got = run(duckdb_engine, L.next_purchase_labels(tx, AS_OF, H))
    assert got.label.to_dict() == {"busy": 1, "leaves": 0, "old": 0, "stays": 1}
    assert got.orders.to_dict() == {"busy": 2, "leaves": 0, "old": 0, "stays": 1}


def test_clv(tx, duckdb_engine):
    got = run(duckdb_engine, L.clv_labels(tx, AS_OF, H))
    assert got.spend.to_dict() == {"busy": 9.0, "leaves": 0.0, "old": 0.0, "stays": 5.0}


def test_cross_sell(tx, duckdb_engine):
    got = run(duckdb_engine, L.cross_sell_labels(tx, AS_OF, H, lookback_days=91,
                                                 categories=["grocery", "dairy", "bakery"]),
              key=["customer_id", "category"])
    labels = got.label.to_dict()
    # "stays" bought grocery 20 days ago: not a candidate; dairy is new to them and bought at as_of 00:00
    assert ("stays", "grocery") not in labels and labels[("stays", "dairy")] == 1
    # "busy" bought bakery exactly 91 days before as_of: still inside the lookback, not a candidate
    assert ("busy", "bakery") not in labels and labels[("busy", "grocery")] == 1
    # "leaves" buys dairy only at as_of + H: outside the window
    assert labels[("leaves", "dairy")] == 0
    assert labels[("old", "grocery")] == 0 and ("new", "grocery") not in labels


def test_cross_sell_needs_categories(tx):
    with pytest.raises(ValueError, match="categories"):
        L.cross_sell_labels(tx, AS_OF, H, 91, [])
