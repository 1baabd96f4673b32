"""Source contract: missing columns fail fast by name; bad rows are quarantined, counted, kept."""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as pads
import pytest

from sources.dataset import DatasetError, open_directory
from sources.load import load_sources
from tests.conftest import tiny_tables, write_dataset


def test_missing_required_column_names_file_and_column(tmp_path, duckdb_engine):
    tx = tiny_tables()["transactions"].drop(columns=["amount"])
    root = write_dataset(tmp_path / "d", {"transactions": tx})
    with pytest.raises(DatasetError) as exc:
        load_sources(open_directory(root), duckdb_engine)
    msg = str(exc.value)
    assert "transactions.parquet" in msg and "'amount'" in msg


def test_missing_column_in_one_csv_part_names_that_part(tmp_path, duckdb_engine):
    root = tmp_path / "d"
    (root / "transactions").mkdir(parents=True)
    tx = tiny_tables()["transactions"]
    tx.iloc[:5].to_csv(root / "transactions" / "part-1.csv", index=False)
    tx.iloc[5:].drop(columns=["timestamp"]).to_csv(root / "transactions" / "part-2.csv", index=False)
    with pytest.raises(DatasetError, match=r"part-2\.csv.*'timestamp'"):
        load_sources(open_directory(root), duckdb_engine)


def test_missing_transactions_table_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="required table 'transactions' not found"):
        open_directory(tmp_path / "empty")


def test_renames_from_dataset_yaml(tmp_path, duckdb_engine):
    tx = tiny_tables()["transactions"].rename(columns={"timestamp": "txn_ts", "customer_id": "cust"})
    root = write_dataset(tmp_path / "d", {"transactions": tx},
                         yaml_text="columns:\n  transactions: {txn_ts: timestamp, cust: customer_id}\n")
    src = load_sources(open_directory(root), duckdb_engine)
    assert src.reports["transactions"].rows_clean == len(tx)


BAD_CSV = """customer_id,order_id,timestamp,amount,category
A,o1,2024-01-01 10:00:00,10.5,grocery
A,o2,2024-01-02 10:00:00,-3.25,grocery
,o3,2024-01-03 10:00:00,1.0,grocery
  ,o3b,2024-01-03 10:00:00,1.0,grocery
B,o4,not-a-date,1.0,grocery
B,o5,2024-13-45 10:00:00,1.0,grocery
B,o6,2024-01-04 10:00:00,"12,5€",grocery
B,o7,2024-01-04 10:00:00,,grocery
B,o8,2024-01-04 10:00:00,nan,grocery
B,o9,2024-01-04 10:00:00,1e12,grocery
B,o10,1899-01-01 10:00:00,1.0,grocery
C,o11,2024-01-05 10:00:00,2.0,bakery
C,o11,2024-01-05 10:00:00,2.0,bakery
C,o11,2024-01-05 10:00:00,2.0,bakery
ünï,o12,2024-01-06 10:00:00,3.0,bakery
"""

EXPECTED_REASONS = {
    "customer_id is missing": 2,
    "timestamp is not a valid timestamp": 2,
    "amount is not a number": 1,
    "amount is missing": 1,
    "amount is not finite": 1,
    "amount is out of range (|x| > 1e+07)": 1,
    "timestamp is out of range (1970-01-01..2100-01-01)": 1,
    "duplicate of another row": 2,
}


def test_bad_rows_are_quarantined_with_reason_and_counted(tmp_path, home, duckdb_engine):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "transactions.csv").write_text(BAD_CSV)
    qdir = home.quarantine("bad", ensure=True)
    src = load_sources(open_directory(root), duckdb_engine, quarantine_dir=qdir)
    rep = src.reports["transactions"]
    assert rep.quarantined == EXPECTED_REASONS
    assert rep.rows_in == 15
    assert rep.rows_clean + rep.rows_quarantined == rep.rows_in
    clean = duckdb_engine.execute(src["transactions"]).sort_values("order_id")
    # returns are data: the negative amount is used; unicode ids are ids
    assert clean.set_index("order_id").loc["o2", "amount"] == -3.25
    assert set(clean.customer_id) == {"A", "C", "ünï"}
    assert clean.order_id.tolist().count("o11") == 1
    # quarantined rows keep their raw text and say why
    q = pads.dataset(str(qdir / "transactions")).to_table().to_pandas()
    assert len(q) == rep.rows_quarantined
    assert set(q["_reason"]) == set(EXPECTED_REASONS)
    assert q.loc[q.order_id == "o6", "amount"].item() == "12,5€"
    assert (q["_table"] == "transactions").all()


def test_quarantine_is_replaced_when_data_is_fixed(tmp_path, home, duckdb_engine):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "transactions.csv").write_text(BAD_CSV)
    qdir = home.quarantine("bad", ensure=True)
    load_sources(open_directory(root), duckdb_engine, quarantine_dir=qdir)
    assert (qdir / "transactions").exists()
    (root / "transactions.csv").write_text(BAD_CSV.splitlines()[0] + "\n" + BAD_CSV.splitlines()[1] + "\n")
    src = load_sources(open_directory(root), duckdb_engine, quarantine_dir=qdir)
    assert src.rows_quarantined == 0
    assert not (qdir / "transactions").exists()


def test_csv_and_parquet_give_the_same_features(tmp_path, home, duckdb_engine):
    from datetime import date

    from features.pipeline import build_snapshot
    from features.snapshot import read_snapshot

    tables = tiny_tables()
    yaml_text = "categories: [grocery, dairy, bakery]\n"
    pq_root = write_dataset(tmp_path / "pq", tables, yaml_text=yaml_text)
    csv_root = write_dataset(tmp_path / "csv", tables, fmt="csv", yaml_text=yaml_text)
    frames = []
    for root in (pq_root, csv_root):
        r = build_snapshot(open_directory(root), date(2024, 3, 1), duckdb_engine, home)
        frames.append(read_snapshot(r.path.parent, date(2024, 3, 1)))
    # CSV attributes are text: compare the numeric attribute after parsing
    frames[1]["attr_children"] = pd.to_numeric(frames[1]["attr_children"])
    pd.testing.assert_frame_equal(frames[0], frames[1], check_dtype=False)


def test_category_from_products_catalog(tmp_path, duckdb_engine):
    tx = tiny_tables()["transactions"].drop(columns=["category"])
    tx["product_id"] = ["p1", "p1", "p2", "p2", "p2", "p1", "p1", "p3", "p1", "p3"]
    products = pd.DataFrame({"product_id": ["p1", "p2", "p3", "p3"],
                             "department": ["grocery", "dairy", "bakery", "bakery"],
                             "aisle": ["dry", "milk", "bread", "bread"]})
    root = write_dataset(tmp_path / "d", {"transactions": tx, "products": products},
                         yaml_text="category_column: department\n")
    src = load_sources(open_directory(root), duckdb_engine)
    got = duckdb_engine.execute(src["transactions"])
    assert len(got) == len(tx), "a product listed twice must not duplicate lines"
    assert got.groupby("product_id")["category"].first().to_dict() == {"p1": "grocery", "p2": "dairy", "p3": "bakery"}
    src2 = load_sources(open_directory(root), duckdb_engine, category_column="aisle")
    got2 = duckdb_engine.execute(src2["transactions"])
    assert set(got2.category) == {"dry", "milk", "bread"}
    with pytest.raises(DatasetError, match="products has no column 'nope'"):
        load_sources(open_directory(root), duckdb_engine, category_column="nope")


def test_non_finite_amounts_in_parquet_are_quarantined(tmp_path, duckdb_engine):
    """Parquet statistics leave NaN out; the check must not trust them (duckdb/duckdb#25521)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tx = pa.table({"customer_id": ["a", "b", "c", "d"], "order_id": ["1", "2", "3", "4"],
                   "timestamp": pa.array(pd.to_datetime(["2024-01-01"] * 4)),
                   "amount": pa.array([1.0, float("nan"), float("inf"), -float("inf")])})
    assert tx["amount"].null_count == 0  # real NaN, not null
    root = tmp_path / "nan"
    root.mkdir()
    pq.write_table(tx, root / "transactions.parquet")
    src = load_sources(open_directory(root), duckdb_engine)
    assert src.reports["transactions"].quarantined == {"amount is not finite": 3}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_randomised_contacts_group_and_assignment_p_are_validated(tmp_path, duckdb_engine, fmt):
    """A randomised campaign's contacts say treatment or control and the probability of
    treatment: another group, or a probability of 0, 1 or above, is quarantined by name;
    a contact without a group (not randomised) is kept."""
    tx = pd.DataFrame({"customer_id": ["a"], "order_id": ["1"], "timestamp": pd.to_datetime(["2024-01-01"]),
                       "amount": [1.0]})
    contacts = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d", "e", "f"], "campaign_id": ["K"] * 6,
        "timestamp": pd.to_datetime(["2024-01-02"] * 6),
        "group": ["treatment", "control", "holdout", None, "control", "treatment"],
        "assignment_p": [0.9, 0.9, 0.9, None, 1.0, 0.0],
    })
    root = tmp_path / fmt
    root.mkdir()
    for name, frame in (("transactions", tx), ("contacts", contacts)):
        if fmt == "csv":
            frame.to_csv(root / f"{name}.csv", index=False)
        else:
            frame.to_parquet(root / f"{name}.parquet", index=False)
    src = load_sources(open_directory(root), duckdb_engine)
    assert src.reports["contacts"].quarantined == {
        "group is not one of treatment, control": 1,
        "assignment_p is not a probability strictly between 0 and 1": 2}
    kept = duckdb_engine.execute(src["contacts"]).sort_values("customer_id")
    assert kept["customer_id"].tolist() == ["a", "b", "d"]
    assert kept["group"].tolist()[:2] == ["treatment", "control"] and pd.isna(kept["group"].iloc[2])
