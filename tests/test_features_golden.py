"""The core feature contract against values computed by hand (tests/conftest.py: tiny_tables).

as_of = 2024-03-01. Population: A, B, D (C only buys on as_of, E never buys).
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.definitions import SEGMENT_GRID, SEGMENTS, rfm_segment
from features.pipeline import build_snapshot
from features.snapshot import read_snapshot
from sources.dataset import open_directory
from tests.conftest import AS_OF

NAN = float("nan")

EXPECTED = {
    "customer_id": ["A", "B", "D"],
    "as_of": [AS_OF] * 3,
    "recency_days": [1, 29, 456],
    "tenure_days": [366, 29, 456],
    "frequency": [2, 2, 0],
    "monetary": [55.0, 20.0, 0.0],
    "r_score": [4, 2, 1],
    "f_score": [2, 2, 1],
    "m_score": [4, 2, 1],
    "rfm_segment": ["loyal", "about_to_sleep", "lost"],
    "orders_total": [3, 2, 1],
    "spend_total": [65.0, 20.0, 50.0],
    "orders_30d": [1, 2, 0],
    "spend_30d": [30.0, 20.0, 0.0],
    "orders_90d": [2, 2, 0],
    "spend_90d": [55.0, 20.0, 0.0],
    "orders_180d": [2, 2, 0],
    "spend_180d": [55.0, 20.0, 0.0],
    "purchase_days": [3, 1, 1],
    "avg_order_value": [65.0 / 3, 10.0, 50.0],
    "ipi_mean_days": [(320 + 45) / 2, NAN, NAN],
    "ipi_std_days": [math.sqrt(((320 - 182.5) ** 2 + (45 - 182.5) ** 2) / 1), NAN, NAN],
    "orders_trend": [1.0, 1.0, 0.0],
    "spend_trend": [1.0, 1.0, 0.0],
    "distinct_categories_365d": [2, 2, 0],
    "spend_share_grocery": [20 / 55, 0.5, 0.0],
    "spend_share_dairy": [35 / 55, 0.0, 0.0],
    "spend_share_bakery": [0.0, 0.5, 0.0],
    "days_since_grocery": [46.0, 29.0, NAN],
    "days_since_dairy": [1.0, NAN, NAN],
    "days_since_bakery": [NAN, 29.0, 456.0],
    "discount_share_365d": [1 / 56, 0.0, 0.0],
    "events_view_90d": [1, 0, 0],
    "events_add_to_cart_90d": [3, 1, 0],
    "events_purchase_90d": [0, 0, 0],
    "events_email_open_90d": [0, 0, 0],
    "events_email_click_90d": [0, 0, 0],
    "events_support_ticket_90d": [0, 0, 0],
    "events_other_90d": [0, 1, 0],
    "days_since_last_event": [1.0, 20.0, NAN],
    "abandoned_carts_90d": [1, 0, 0],
    "contacts_365d": [1, 0, 1],
    "days_since_last_contact": [29.0, NAN, 29.0],
    "responses_365d": [1, 0, 0],
    "response_rate_365d": [1.0, NAN, 0.0],
    "attr_age_band": ["25-34", "45-54", None],
    "attr_city": ["York", None, None],
    "attr_children": [3.0, NAN, NAN],
}


def expected_frame() -> pd.DataFrame:
    df = pd.DataFrame(EXPECTED)
    return df


def build(dataset_dir, home, engine, as_of=AS_OF, config=None, out=None):
    ds = open_directory(dataset_dir)
    result = build_snapshot(ds, as_of, engine, home, config=config or FeatureConfig(), out=out)
    return result, read_snapshot(result.path.parent, as_of)


def test_core_contract_matches_hand_computed_values(tiny_dataset, home, duckdb_engine):
    result, got = build(tiny_dataset, home, duckdb_engine)
    want = expected_frame()
    assert list(got.columns) == list(want.columns), "names and order are part of the contract"
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)
    # dtypes as declared
    declared = result.feature_set.dtypes
    for col in got.columns:
        kind = {"int64": "i", "float64": "f"}.get(declared[col])
        if kind:
            assert got[col].dtype.kind == kind, col
    assert result.rows == 3


@pytest.mark.parametrize(
    "timestamp, counts",
    [
        pytest.param("2024-02-29 23:59:59", True, id="23:59:59-the-day-before-counts"),
        pytest.param("2024-03-01 00:00:00", False, id="00:00-on-as_of-does-not-count"),
        pytest.param("2024-03-01 00:00:01", False, id="after-midnight-does-not-count"),
    ],
)
def test_cutoff_boundary(tmp_path, home, duckdb_engine, timestamp, counts):
    from tests.conftest import write_dataset

    tx = pd.DataFrame({
        "customer_id": ["X", "X"], "order_id": ["early", "edge"],
        "timestamp": [pd.Timestamp("2024-01-01 12:00"), pd.Timestamp(timestamp)], "amount": [1.0, 7.0],
    })
    root = write_dataset(tmp_path / "edge", {"transactions": tx})
    _, got = build(root, home, duckdb_engine)
    row = got.iloc[0]
    assert row.frequency == (2 if counts else 1)
    assert row.monetary == (8.0 if counts else 1.0)
    assert row.recency_days == (1 if counts else 60)


def test_shape_is_stable_across_as_of_dates(tiny_dataset, home, duckdb_engine):
    r1, a = build(tiny_dataset, home, duckdb_engine, as_of=date(2024, 3, 1))
    r2, b = build(tiny_dataset, home, duckdb_engine, as_of=date(2023, 6, 1))
    r3, c = build(tiny_dataset, home, duckdb_engine, as_of=date(2025, 1, 1))
    assert r1.feature_set.fingerprint() == r2.feature_set.fingerprint() == r3.feature_set.fingerprint()
    assert list(a.columns) == list(b.columns) == list(c.columns)
    assert [str(t) for t in a.dtypes] == [str(t) for t in b.dtypes] == [str(t) for t in c.dtypes]
    # 2023-06-01: only A (o1) and D (o8) had bought; every later order is invisible.
    assert b.customer_id.tolist() == ["A", "D"]
    assert b.set_index("customer_id").loc["A", "orders_total"] == 1


def test_no_order_before_as_of_is_an_error(tiny_dataset, home, duckdb_engine):
    from features.snapshot import EmptySnapshotError

    with pytest.raises(EmptySnapshotError, match="no customer has an order before 2020-01-01"):
        build(tiny_dataset, home, duckdb_engine, as_of=date(2020, 1, 1))


def test_windows_are_configuration(tiny_dataset, home, duckdb_engine, tmp_path):
    cfg = FeatureConfig(windows_days=[7, 45], rfm_window_days=60, event_window_days=30)
    _result, got = build(tiny_dataset, home, duckdb_engine, config=cfg, out=tmp_path / "other")
    assert {"orders_7d", "orders_45d", "distinct_categories_60d", "events_view_30d"} <= set(got.columns)
    assert "orders_30d" not in got.columns
    a = got.set_index("customer_id").loc["A"]
    assert a.frequency == 2 and a.orders_7d == 1 and a.orders_45d == 1  # o2 is 46 days before as_of


def test_segment_grid_is_total_and_uses_every_segment():
    cells = {rfm_segment(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}
    assert cells == set(SEGMENTS)
    assert all(len(row) == 5 for row in SEGMENT_GRID.values())
    assert rfm_segment(5, 5, 5) == "champions" and rfm_segment(1, 1, 1) == "lost"
    assert rfm_segment(5, 1, 1) == "new_customers" and rfm_segment(1, 5, 5) == "cannot_lose"


def test_scores_are_quintiles_with_ties_sharing_a_score(tmp_path, home, duckdb_engine):
    from tests.conftest import write_dataset

    # 10 customers, customer i buys i+1 times (one order each day), so frequency = i + 1
    rows = []
    for i in range(10):
        for k in range(i + 1):
            rows.append((f"c{i}", f"c{i}-o{k}", pd.Timestamp("2024-02-01") + pd.Timedelta(days=k), 10.0))
    rows.append(("c9b", "extra", pd.Timestamp("2024-02-10"), 100.0))  # ties c9's recency
    tx = pd.DataFrame(rows, columns=["customer_id", "order_id", "timestamp", "amount"])
    _, got = build(write_dataset(tmp_path / "q", {"transactions": tx}), home, duckdb_engine)
    f = got.set_index("customer_id")["f_score"]
    # n = 11; frequency ranks: c9b (1 order) ties with c0 -> both rank 0
    assert f["c0"] == f["c9b"] == 1
    assert f["c9"] == 5 and f["c8"] == 5
    assert sorted(got.f_score.unique()) == [1, 2, 3, 4, 5]
    assert got.groupby("f_score").size().max() <= 3
    r = got.set_index("customer_id")["r_score"]
    assert r["c9"] == r["c9b"] == 5  # same last-order day, same score


def test_pandas_reference_agrees_on_core_features(tiny_dataset, home, duckdb_engine):
    from features.pandas_reference import core_features

    _, got = build(tiny_dataset, home, duckdb_engine)
    tx = pd.read_parquet(tiny_dataset / "transactions.parquet")
    ref = core_features(tx, AS_OF)
    cols = list(ref.columns)
    pd.testing.assert_frame_equal(got[cols], ref, check_dtype=False)


def test_features_do_not_change_when_future_data_changes(tiny_dataset, home, duckdb_engine, tmp_path):
    """Time honesty: rewriting everything at or after as_of leaves the snapshot unchanged."""
    from tests.conftest import tiny_tables, write_dataset

    _, before = build(tiny_dataset, home, duckdb_engine)
    tables = tiny_tables()
    cut = pd.Timestamp(AS_OF)
    rng = np.random.default_rng(7)
    for name, df in tables.items():
        ts_col = "updated_at" if name == "customers" else "timestamp"
        future = df[ts_col] >= cut
        extra = df[future].copy()
        if "amount" in extra:
            extra["amount"] = rng.uniform(-50, 500, len(extra))
        extra[ts_col] = extra[ts_col] + pd.Timedelta(days=3)
        tables[name] = pd.concat([df, extra, extra], ignore_index=True)
    # and a burst of future orders for everyone, including new customers
    burst = pd.DataFrame({"customer_id": ["A", "B", "D", "Z"], "order_id": ["f1", "f2", "f3", "f4"],
                          "timestamp": [cut, cut + pd.Timedelta(hours=5), cut + pd.Timedelta(days=40), cut],
                          "amount": [1e3, 2e3, 3e3, 4e3], "category": ["dairy"] * 4, "discount": [0.0] * 4})
    tables["transactions"] = pd.concat([tables["transactions"], burst], ignore_index=True)
    root = write_dataset(tmp_path / "future", tables, yaml_text="name: future\ncategories: [grocery, dairy, bakery]\n")
    _, after = build(root, home, duckdb_engine)
    pd.testing.assert_frame_equal(before, after)


def test_progress_steps_are_the_ones_reported(tiny_dataset, home, duckdb_engine):
    from features.pipeline import build_steps

    seen: list[str] = []
    ds = open_directory(tiny_dataset)
    build_snapshot(ds, AS_OF, duckdb_engine, home, step=seen.append)
    assert seen == build_steps(ds)


def test_money_that_cancels_out_is_exactly_zero(tmp_path, home, duckdb_engine):
    """0.1 + 0.2 - 0.3 is 5.6e-17 in floating point; summed money is rounded to a millionth so a
    refunded basket is 0.0 whatever the summation order, and its trend is 0, not +1."""
    from tests.conftest import write_dataset

    tx = pd.DataFrame({"customer_id": ["R"] * 3, "order_id": ["o"] * 3,
                       "timestamp": [pd.Timestamp("2024-02-20 10:00")] * 3, "amount": [0.1, 0.2, -0.3]})
    assert tx.amount.sum() != 0.0
    _, got = build(write_dataset(tmp_path / "refund", {"transactions": tx}), home, duckdb_engine)
    row = got.iloc[0]
    assert row.monetary == 0.0 and row.spend_30d == 0.0 and row.spend_total == 0.0
    assert row.spend_trend == 0.0 and row.orders_trend == 1.0
