"""Tests of the synthetic dataset generator (sources.synth).

Three tiers: code (determinism, layout, refusal to overwrite), data (schemas, window,
truth coverage, injected problems counted exactly, loader agreement) and behaviour
(seasonality, heterogeneity, dropout, cross-sell, carts, campaign logic, identity
traps, the response truth). Small worlds (500-2,000 persons) keep them fast.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources.dataset import DatasetConfig, load_config, open_directory
from sources.synth import (
    JUNK_EMAILS,
    JUNK_PHONES,
    MARKER,
    UPLIFT_KINDS,
    SynthParams,
    generate,
    person_of_record,
    read_response,
)

TABLES = ("transactions", "events", "contacts", "responses", "identities", "customers")
START, END = datetime(2024, 1, 1), datetime(2026, 1, 1)  # END exclusive
#: rare problems raised so that 2,000 persons hold several of each
TRAPS = SynthParams(junk_identifier_rate=0.03, recycled_phone_rate=0.01, shared_device_share=0.02,
                    null_customer_id_rate=5e-4, nan_amount_rate=5e-4, duplicate_line_rate=5e-4,
                    bad_timestamp_rate=5e-3, bad_amount_rate=5e-3)

US = pa.timestamp("us")
SCHEMAS = {
    "transactions": pa.schema([("customer_id", pa.string()), ("source_system", pa.string()),
                               ("order_id", pa.string()), ("timestamp", US), ("amount", pa.float64()),
                               ("product_id", pa.string()), ("category", pa.string()),
                               ("quantity", pa.float64()), ("discount", pa.float64()),
                               ("coupon_discount", pa.float64()), ("channel", pa.string()),
                               ("store_id", pa.string())]),
    "events": pa.schema([("customer_id", pa.string()), ("source_system", pa.string()), ("timestamp", US),
                         ("event_type", pa.string())]),
    "contacts": pa.schema([("customer_id", pa.string()), ("source_system", pa.string()),
                           ("campaign_id", pa.string()), ("timestamp", US), ("channel", pa.string())]),
    "responses": pa.schema([("customer_id", pa.string()), ("source_system", pa.string()),
                            ("campaign_id", pa.string()), ("timestamp", US)]),
    "identities": pa.schema([("source_system", pa.string()), ("source_id", pa.string()),
                             ("id_type", pa.string()), ("value", pa.string()), ("seen_at", US)]),
    "customers": pa.schema([("customer_id", pa.string()), ("source_system", pa.string()), ("updated_at", US),
                            ("birth_year", pa.int64()), ("gender", pa.string()), ("region", pa.string()),
                            ("loyalty_tier", pa.string())]),
    "products": pa.schema([("product_id", pa.string()), ("category", pa.string()),
                           ("subcategory", pa.string()), ("list_price", pa.float64())]),
}
RESPONSE_SCHEMA = pa.schema([("person_id", pa.int64()), ("category", pa.string()), ("kind", pa.string()),
                             ("p_control", pa.float64()), ("p_treated", pa.float64())])
CATEGORIES = ("grocery", "fresh", "dairy", "bakery", "beverages", "alcohol", "household", "beauty", "baby",
              "pets", "electronics", "clothing")


# ------------------------------------------------------------------ helpers
def read(root: Path, table: str) -> pd.DataFrame:
    path = root / (f"{table}.parquet" if table == "products" else table)
    return pq.read_table(path).to_pandas()


def norm_email(v: str) -> str:
    """The linker's convention: strip, lowercase; gmail drops dots and +tags, googlemail -> gmail."""
    local, _, domain = v.strip().lower().rpartition("@")
    if domain in ("gmail.com", "googlemail.com"):
        local, domain = local.split("+", 1)[0].replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def norm_phone(v: str) -> str:
    d = re.sub(r"\D", "", v)
    d = d.removeprefix("00")
    if d.startswith("0"):
        d = "44" + d[1:]
    return d


def normalise(ids: pd.DataFrame) -> pd.Series:
    norm = {"email": norm_email, "phone": norm_phone, "loyalty_card": lambda v: re.sub(r"\D", "", v)}
    return pd.Series([norm.get(t, str)(v) for t, v in zip(ids.id_type, ids.value)], index=ids.index)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """2,000 persons in 3 chunks, with rare problems raised."""
    out = tmp_path_factory.mktemp("synth") / "world"
    generate(out, 2000, seed=7, chunk_size=800, params=TRAPS)
    return out


@pytest.fixture(scope="module")
def person_of(world) -> dict[str, int]:
    rec = read(world, "truth/records.parquet")
    return dict(zip(rec.source_id, rec.person_id))


@pytest.fixture(scope="module")
def persons(world) -> pd.DataFrame:
    return read(world, "truth/persons.parquet").set_index("person_id")


@pytest.fixture(scope="module")
def orders(world, person_of) -> pd.DataFrame:
    """Order lines with their person, without the injected bad rows."""
    tx = read(world, "transactions").dropna(subset=["customer_id", "amount"]).drop_duplicates()
    tx["person"] = tx.customer_id.map(person_of)
    return tx


# ----------------------------------------------------------------- code tier
def test_same_seed_gives_identical_files_and_tables(tmp_path):
    a = generate(tmp_path / "a", 600, seed=3, chunk_size=250)
    b = generate(tmp_path / "b", 600, seed=3, chunk_size=250)
    assert a.rows == b.rows and a.quality == b.quality
    files_a = sorted(p.relative_to(a.path) for p in a.path.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.path) for p in b.path.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name == "dataset.yaml":  # holds the directory name
            continue
        assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes(), rel
    for table in (*TABLES, "products", "truth/persons.parquet"):
        pd.testing.assert_frame_equal(read(a.path, table), read(b.path, table))


def test_different_seed_gives_different_data(tmp_path):
    a = generate(tmp_path / "a", 300, seed=1)
    b = generate(tmp_path / "b", 300, seed=2)
    for table in ("transactions", "identities", "truth/records.parquet"):
        left, right = read(a.path, table), read(b.path, table)
        assert len(left) != len(right) or not left.equals(right), table
    assert not set(read(a.path, "truth/records.parquet").source_id) & set(
        read(b.path, "truth/records.parquet").source_id)


def test_summary_and_progress(tmp_path):
    calls: list[tuple[int, int]] = []
    s = generate(tmp_path / "d", 450, seed=0, chunk_size=200, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(200, 450), (400, 450), (450, 450)]
    assert s.path == (tmp_path / "d").resolve() and s.persons == 450
    for table in TABLES:
        assert s.rows[table] == len(read(s.path, table)), table
    assert s.records == len(read(s.path, "truth/records.parquet"))
    assert len(list((s.path / "transactions").glob("part-*.parquet"))) == 3
    assert json.loads((s.path / "truth" / "quality.json").read_text()) == s.quality


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a previous synth output"):
        generate(target, 50)
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # nothing staged left behind
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate(afile, 50)


def test_replaces_a_previous_output_and_accepts_an_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(empty, 50, seed=1)
    assert (empty / MARKER).is_file()
    generate(empty, 80, seed=2)  # a synth output: replaced whole
    assert json.loads((empty / MARKER).read_text())["persons"] == 80
    assert len(read(empty, "truth/persons.parquet")) == 80
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_an_interrupted_run_leaves_nothing(tmp_path):
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "out", 300, chunk_size=100, progress=stop)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"customers": 0}, {"customers": 10, "fmt": "json"},
                                    {"customers": 10, "chunk_size": 0},
                                    {"customers": 10, "start": date(2025, 1, 1), "end": date(2024, 1, 1)}],
                         ids=["no-customers", "bad-format", "bad-chunk", "reversed-window"])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate(tmp_path / "x", **kwargs)


# ----------------------------------------------------------------- data tier
def test_dataset_directory_is_discovered(world):
    ds = open_directory(world)
    assert set(ds.tables) == {*TABLES, "products"}
    assert all(tf.fmt == "parquet" for tf in ds.tables.values())
    assert load_config(world) == DatasetConfig(name="world", category_column="category",
                                               description="synthetic, 2000 persons, seed 7")


@pytest.mark.parametrize("table", [*TABLES, "products"])
def test_schema(world, table):
    path = world / ("products.parquet" if table == "products" else table)
    assert pq.read_table(path).schema.remove_metadata() == SCHEMAS[table]


def test_every_timestamp_is_inside_the_window(world):
    columns = {t: [f.name for f in SCHEMAS[t] if f.type == US] for t in TABLES}
    columns |= {"truth/persons.parquet": ["acquired_at", "dropout_at"], "truth/records.parquet": ["created_at"]}
    for table, cols in columns.items():
        df = read(world, table)
        for col in cols:
            ts = df[col].dropna()
            assert len(ts) and ts.min() >= START and ts.max() < END, (table, col)


def test_custom_window_is_respected(tmp_path):
    s = generate(tmp_path / "w", 300, start=date(2023, 3, 1), end=date(2023, 8, 31))
    for table in ("transactions", "events", "contacts", "identities"):
        col = "seen_at" if table == "identities" else "timestamp"
        ts = read(s.path, table)[col]
        assert ts.min() >= datetime(2023, 3, 1) and ts.max() < datetime(2023, 9, 1), table


def test_orders_are_consistent(world):
    tx = read(world, "transactions").dropna(subset=["customer_id"])
    per_order = tx.groupby("order_id").agg(n_cust=("customer_id", "nunique"), n_ts=("timestamp", "nunique"),
                                           n_chan=("channel", "nunique"))
    assert (per_order == 1).all().all()
    assert tx.drop_duplicates().groupby(["order_id", "product_id"]).size().max() == 1
    store = tx.channel == "store"
    assert tx.store_id[store].notna().all() and tx.store_id[~store].isna().all()
    expected_system = tx.channel.map({"store": "pos", "web": "web", "app": "app"})
    assert (tx.source_system == expected_system).all()
    assert tx.customer_id.str.slice(0, 3).eq(tx.source_system).all()
    assert (tx.discount >= tx.coupon_discount).all() and (tx.coupon_discount >= 0).all()
    priced = tx.dropna(subset=["amount"])
    returns = priced.amount < 0
    assert 0.002 < returns.mean() < 0.01
    assert (priced.quantity[returns] < 0).all() and (priced.quantity[~returns] > 0).all()
    products = read(world, "products")
    assert set(tx.product_id) <= set(products.product_id)
    cat = tx.product_id.map(products.set_index("product_id").category)
    assert (cat == tx.category).all()


def test_record_ids_are_unique_and_opaque(world):
    rec = read(world, "truth/records.parquet")
    assert rec.source_id.is_unique
    assert rec.source_id.str.fullmatch(r"(pos|web|app|crm)-[0-9a-f]{10}").all()
    assert (rec.source_id.str.slice(0, 3) == rec.source_system).all()
    # record ids do not follow person order
    first = rec.sort_values("person_id").groupby("source_system").source_id.apply(list)
    assert all(ids != sorted(ids) for ids in first)


def test_truth_maps_every_record(world, person_of):
    seen = set()
    for table in TABLES:
        df = read(world, table)
        key = "source_id" if table == "identities" else "customer_id"
        seen |= set(df[key].dropna())
    assert seen <= set(person_of)
    persons = read(world, "truth/persons.parquet")
    assert persons.person_id.tolist() == list(range(2000))
    rec = read(world, "truth/records.parquet")
    per_person = rec.groupby("person_id").size()
    assert per_person.between(1, 6).all() and 2.2 < per_person.mean() < 2.8
    shares = rec.groupby("source_system").person_id.nunique() / len(persons)
    assert 0.8 < shares["pos"] < 0.95 and 0.45 < shares["web"] < 0.65
    assert 0.25 < shares["app"] < 0.45 and 0.55 < shares["crm"] < 0.72


def test_quality_counts_equal_the_bad_rows_present(world):
    quality = json.loads((world / "truth" / "quality.json").read_text())
    bad = quality["bad_rows"]
    tx = read(world, "transactions")
    assert tx.customer_id.isna().sum() == bad["transactions"]["null_customer_id"] > 0
    assert tx.amount.isna().sum() == bad["transactions"]["nan_amount"] > 0
    assert tx.duplicated().sum() == bad["transactions"]["duplicate_row"] > 0
    ids = read(world, "identities")
    assert ids.duplicated().sum() == bad["identities"]["duplicate_row"] > 0
    for table in ("events", "contacts", "responses"):
        assert not read(world, table).duplicated().any(), table
    assert read(world, "products").product_id.is_unique
    finite = tx.amount.dropna()
    assert np.isfinite(finite).all() and finite.abs().max() < 1e5


@pytest.fixture(scope="module")
def load_reports(world) -> dict:
    from base.engines import DuckDBEngine
    from sources.load import load_sources

    engine = DuckDBEngine(threads=1)
    try:
        return load_sources(open_directory(world), engine).reports
    finally:
        engine.close()


def test_loader_quarantines_exactly_the_injected_rows(world, load_reports):
    bad = json.loads((world / "truth" / "quality.json").read_text())["bad_rows"]
    tx = load_reports["transactions"].quarantined
    assert tx.get("customer_id is missing") == bad["transactions"]["null_customer_id"]
    assert tx.get("duplicate of another row") == bad["transactions"]["duplicate_row"]
    assert load_reports["identities"].quarantined == {
        "duplicate of another row": bad["identities"]["duplicate_row"]}
    for table in ("events", "contacts", "responses", "customers", "products"):
        assert load_reports[table].rows_quarantined == 0, table


def test_loader_quarantines_nan_amounts(world, load_reports):
    bad = json.loads((world / "truth" / "quality.json").read_text())["bad_rows"]
    assert load_reports["transactions"].quarantined.get("amount is not finite") == bad["transactions"]["nan_amount"]


def test_csv_mode_writes_text_with_counted_text_problems(tmp_path):
    s = generate(tmp_path / "csv", 1500, seed=5, fmt="csv", chunk_size=600, params=TRAPS)
    ds = open_directory(s.path)
    assert set(ds.tables) == {*TABLES, "products"} and all(tf.fmt == "csv" for tf in ds.tables.values())
    tx = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in ds.tables["transactions"].files])
    assert len(tx) == s.rows["transactions"] and list(tx.columns) == SCHEMAS["transactions"].names
    bad = s.quality["bad_rows"]["transactions"]
    ts_ok = pd.to_datetime(tx.timestamp, format="%Y-%m-%d %H:%M:%S.%f", errors="coerce").notna()
    assert (~ts_ok).sum() == bad["unparseable_timestamp"] > 0
    assert tx.amount.str.endswith("€").sum() == bad["non_numeric_amount"] > 0
    assert (tx.customer_id == "").sum() == bad["null_customer_id"]
    assert (tx.amount == "nan").sum() == bad["nan_amount"]

    from base.engines import DuckDBEngine
    from sources.load import load_sources

    engine = DuckDBEngine(threads=1)
    try:
        report = load_sources(ds, engine, tables=("transactions",)).reports["transactions"]
    finally:
        engine.close()
    assert report.quarantined == {
        "customer_id is missing": bad["null_customer_id"], "amount is not finite": bad["nan_amount"],
        "duplicate of another row": bad["duplicate_row"],
        "timestamp is not a valid timestamp": bad["unparseable_timestamp"],
        "amount is not a number": bad["non_numeric_amount"],
    }


# ------------------------------------------------------------ behaviour tier
def test_yearly_and_weekly_seasonality(orders):
    first = orders.drop_duplicates("order_id")
    month = first.timestamp.dt.month.value_counts()
    assert month[12] > 1.3 * month[8]
    store = first[first.channel == "store"]
    per_day = store.timestamp.dt.day_of_week.value_counts() / 2  # 2 years: ~104 of each weekday
    assert per_day[5] > 1.2 * per_day[[0, 1, 2]].mean()


def test_spend_is_concentrated(orders):
    spend = orders.groupby("person").amount.sum().reindex(range(2000), fill_value=0).sort_values()
    top = spend.iloc[-400:].sum() / spend.sum()
    assert top > 0.5


def test_dropout_is_visible_and_matches_truth(orders, world, persons):
    last = orders.groupby("person").timestamp.max()
    assert (last < END - pd.Timedelta(days=90)).mean() > 0.2
    dropped = persons.dropout_at.notna()
    assert 0.2 < dropped.mean() < 0.6
    purchases = orders[orders.amount > 0]
    after = purchases.timestamp > purchases.person.map(persons.dropout_at)
    assert not after.any()
    before = purchases.timestamp < purchases.person.map(persons.acquired_at)
    assert not before.any()
    acquired = persons.acquired_at[~persons.existing_base]
    assert acquired.dt.to_period("M").value_counts().sort_index().iloc[-3:].mean() > \
        acquired.dt.to_period("M").value_counts().sort_index().iloc[:3].mean()


def test_categories_are_adopted_over_time(orders, persons):
    purchases = orders[orders.amount > 0]
    first_order = purchases.groupby("person").timestamp.min()
    first_in_cat = purchases.groupby(["person", "category"]).timestamp.min().reset_index()
    later = first_in_cat.timestamp > first_in_cat.person.map(first_order) + pd.Timedelta(days=30)
    assert first_in_cat[later].person.nunique() > 0.3 * first_order.size
    # segments shape baskets: families buy baby products far more than others
    baby = purchases.assign(baby=purchases.category == "baby").groupby("person").baby.mean()
    seg = persons.segment.reindex(baby.index)
    assert baby[seg == "families"].mean() > 5 * baby[seg != "families"].mean()


def test_online_orders_follow_views_and_carts_and_some_carts_are_abandoned(world, orders, person_of):
    ev = read(world, "events")
    assert set(ev.event_type) == {"view", "add_to_cart", "purchase", "email_open", "email_click", "support_ticket"}
    assert set(ev.source_system) <= {"web", "app"}
    tx = read(world, "transactions")  # with injected rows: every order counts
    tx["customer_id"] = tx.groupby("order_id").customer_id.transform("first")
    online = tx[(tx.channel != "store") & (tx.quantity > 0)].drop_duplicates("order_id").dropna(
        subset=["customer_id"])
    purchase = ev[ev.event_type == "purchase"]
    online_keys = set(zip(online.customer_id, online.timestamp))
    purchase_keys = set(zip(purchase.customer_id, purchase.timestamp))
    assert online_keys <= purchase_keys and len(purchase_keys) == len(purchase)
    # only a one-line order whose line lost its customer id to injection can go missing
    nulled = json.loads((world / "truth" / "quality.json").read_text())["bad_rows"]["transactions"]
    assert len(purchase_keys - online_keys) <= nulled["null_customer_id"]
    carts = ev[ev.event_type == "add_to_cart"].sort_values("timestamp")
    joined = pd.merge_asof(online.sort_values("timestamp"), carts[["customer_id", "timestamp"]].rename(
        columns={"timestamp": "cart_at"}), left_on="timestamp", right_on="cart_at", by="customer_id")
    gap = joined.timestamp - joined.cart_at
    assert (gap <= pd.Timedelta(hours=1)).all()
    views = ev[ev.event_type == "view"].sort_values("timestamp")
    joined = pd.merge_asof(online.sort_values("timestamp"), views[["customer_id", "timestamp"]].rename(
        columns={"timestamp": "view_at"}), left_on="timestamp", right_on="view_at", by="customer_id")
    assert ((joined.timestamp - joined.view_at) <= pd.Timedelta(hours=1)).all()
    # abandoned: no order of that person (any channel) in the next 24 hours
    carts = carts.assign(person=carts.customer_id.map(person_of))
    nxt = pd.merge_asof(carts, orders.drop_duplicates("order_id")[["person", "timestamp"]].sort_values(
        "timestamp").rename(columns={"timestamp": "order_at"}), left_on="timestamp", right_on="order_at",
        by="person", direction="forward")
    abandoned = nxt.order_at.isna() | (nxt.order_at - nxt.timestamp > pd.Timedelta(hours=24))
    assert 0.02 < abandoned.mean() < 0.5


def test_support_tickets_are_rare_and_cluster_before_dropout(world, person_of, persons):
    ev = read(world, "events")
    tickets = ev[ev.event_type == "support_ticket"]
    assert 0 < len(tickets) < 0.03 * len(ev)
    dropout = tickets.customer_id.map(person_of).map(persons.dropout_at)
    near = (dropout - tickets.timestamp).between(pd.Timedelta(0), pd.Timedelta(days=45))
    assert near.mean() > 0.3


def test_campaigns_contacts_and_responses(world, orders, person_of, persons):
    contacts, responses = read(world, "contacts"), read(world, "responses")
    assert set(contacts.source_system) == {"crm"} and set(responses.source_system) == {"crm"}
    assert set(contacts.channel) == {"email", "sms", "mail"}
    send = contacts.groupby("campaign_id").timestamp.min().sort_values()
    gaps = send.diff().dropna().dt.days
    assert gaps.between(13, 29).all()
    crm_records = read(world, "truth/records.parquet").query("source_system == 'crm'")
    reach = contacts.groupby("campaign_id").customer_id.nunique() / len(crm_records)
    assert reach.between(0.05, 0.5).all() and 0.15 < reach.mean() < 0.4
    merged = responses.merge(contacts, on=["customer_id", "campaign_id"], suffixes=("", "_contact"))
    assert len(merged) == len(responses)  # every response has its contact (same record and campaign)
    delay = merged.timestamp - merged.timestamp_contact
    assert (delay > pd.Timedelta(0)).all() and (delay <= pd.Timedelta(days=14)).all()
    assert not responses.duplicated(["customer_id", "campaign_id"]).any()
    tx = read(world, "transactions")  # with injected rows: a nulled id must not hide a coupon
    tx["customer_id"] = tx.groupby("order_id").customer_id.transform("first")
    coupons = tx[tx.coupon_discount > 0].drop_duplicates("order_id").dropna(subset=["customer_id"])
    assert tx[tx.coupon_discount > 0].order_id.nunique() == len(responses)
    key = set(zip(responses.customer_id.map(person_of), responses.timestamp))
    assert key >= set(zip(coupons.customer_id.map(person_of), coupons.timestamp))
    assert len(key) == len(responses)
    # alive persons are targeted more and respond more
    contacts["person"] = contacts.customer_id.map(person_of)
    alive = contacts.timestamp < contacts.person.map(persons.dropout_at).fillna(END)
    assert alive.mean() > 0.6
    responded = set(responses.customer_id.map(person_of))
    rate = persons.purchase_rate
    assert rate[list(responded)].mean() > rate[list(set(contacts.person) - responded)].mean()


def test_customers_have_versions_and_conflicts(world, person_of):
    cust = read(world, "customers")
    assert set(cust.source_system) == {"crm", "web"}
    versions = cust.groupby("customer_id").size()
    assert versions.max() >= 2 and 0.1 < (versions > 1).mean() < 0.4
    assert cust.birth_year.isna().any() and cust.gender.isna().any()
    latest = cust.sort_values("updated_at").groupby("customer_id").last().reset_index()
    latest["person"] = latest.customer_id.map(person_of)
    conflicting = latest.groupby("person").birth_year.nunique()
    assert (conflicting > 1).sum() > 0
    assert set(cust.loyalty_tier) <= {"bronze", "silver", "gold", "platinum"}
    # versions of a record are distinct points in time, and a move is never undone
    assert not cust.duplicated(["customer_id", "updated_at"]).any()
    cust["person"] = cust.customer_id.map(person_of)
    crm = cust[cust.source_system == "crm"]
    single = crm.groupby("person").customer_id.nunique().loc[lambda n: n == 1].index
    history = crm[crm.person.isin(single)].sort_values(["customer_id", "updated_at"])
    regions_seen = history.groupby("customer_id").region.agg(lambda r: (r != r.shift()).sum())
    assert regions_seen.max() == 2 and (regions_seen == 2).sum() > 10


# -------------------------------------------------------------- identities
@pytest.fixture(scope="module")
def identities(world, person_of) -> pd.DataFrame:
    ids = read(world, "identities").drop_duplicates()
    ids["person"] = ids.source_id.map(person_of)
    ids["norm"] = normalise(ids)
    return ids


def test_identifier_types_per_system(identities):
    types = identities.groupby("source_system").id_type.unique().map(set)
    assert types["pos"] == {"loyalty_card"}
    assert types["crm"] == {"email", "phone", "loyalty_card", "crm_id"}
    assert types["web"] == {"email", "cookie", "device"}
    assert types["app"] == {"device", "email", "phone"}
    per_record = identities.groupby("source_id").size()
    assert per_record.mean() > 2


def test_messy_values_normalise_to_the_truth(world, identities, persons):
    quality = json.loads((world / "truth" / "quality.json").read_text())
    emails = identities[(identities.id_type == "email") & ~identities.value.str.strip().str.lower().isin(JUNK_EMAILS)]
    ok = (emails.norm == emails.person.map(persons.email)) | (emails.norm == emails.person.map(persons.alt_email))
    assert (~ok).sum() == quality["identity_traps"]["typo_email"] > 0
    phones = identities[(identities.id_type == "phone") & ~identities.value.isin(JUNK_PHONES)]
    assert (phones.norm == phones.person.map(persons.phone)).all()
    assert phones.value.str.startswith("+44 ").any() and phones.value.str.startswith("0044-").any()
    assert phones.value.str.startswith("(0").any() and phones.value.str.fullmatch(r"0\d{10}").any()
    cards = identities[identities.id_type == "loyalty_card"]
    assert cards.norm.str.fullmatch(r"\d{16}").all() and cards.value.str.contains("[ -]").any()
    # a card on a CRM record is the card of one of the person's pos records
    pos_cards = cards[cards.source_system == "pos"].set_index("norm").person
    crm_cards = cards[cards.source_system == "crm"]
    assert (crm_cards.norm.map(pos_cards) == crm_cards.person).all()


def test_gmail_variants_are_present(identities):
    gmail = identities[identities.norm.str.endswith("@gmail.com") & (identities.id_type == "email")]
    raw = gmail.value.str.strip()
    assert raw.str.lower().str.endswith("@googlemail.com").any()
    assert raw.str.contains(r"\+").any()
    assert (raw.str.contains(r"\.[^@]*@") & (gmail.groupby("person").value.transform("nunique") > 1)).any()
    assert (raw != raw.str.lower()).any() and (gmail.value != raw).any()
    # the same person's gmail address written differently on different records
    assert (gmail.groupby("person").value.nunique() > 1).any()


def test_only_traps_link_different_persons(world, identities, persons):
    """Grouped by normalised value, an identifier spanning several persons is a junk
    placeholder, a shared household device or a recycled phone - nothing else."""
    spans = identities.groupby(["id_type", "norm"]).person.nunique()
    shared = spans[spans > 1].reset_index()
    junk = {norm_email(e) for e in JUNK_EMAILS} | {norm_phone(p) for p in JUNK_PHONES}
    kinds = shared.id_type.where(~shared.norm.isin(junk), "junk")
    assert set(kinds) == {"junk", "device", "phone"}
    # junk placeholders are hubs: one is on more than 10 unrelated records
    hub = identities[identities.norm.isin(junk)].groupby("norm").source_id.nunique()
    assert hub.max() > 10
    # devices are shared only inside a household; phones only between a number's two owners
    devices = identities[identities.id_type == "device"].assign(hh=lambda d: d.person.map(persons.household_id))
    by_device = devices.groupby("norm").agg(n=("person", "nunique"), hh=("hh", "nunique"))
    assert ((by_device.n == 1) | (by_device.hh == 1)).all() and (by_device.n > 1).any()
    recycled = persons.phone_previous_owner.dropna().astype(int)
    phone_pairs = {frozenset(p) for p in zip(recycled.index, recycled)}
    phones = identities[(identities.id_type == "phone") & ~identities.norm.isin(junk)]
    multi = phones.groupby("norm").person.unique()
    multi = multi[multi.map(len) > 1]
    assert len(multi) and all(frozenset(p) in phone_pairs for p in multi)


def test_recycled_phone_moves_later(world, identities, persons):
    """The new owner's rows carrying the number are all seen after the old owner's."""
    taker = persons.phone_previous_owner.dropna().astype(int)
    number = taker.index.map(persons.phone)
    phones = identities[identities.id_type == "phone"].set_index(["person", "norm"]).seen_at
    pairs = 0
    for new, old, num in zip(taker.index, taker, number):
        if (new, num) in phones.index and (old, num) in phones.index:
            assert phones.loc[[(new, num)]].min() > phones.loc[[(old, num)]].max()
            pairs += 1
    assert pairs > 0


def test_trap_counts_in_quality_json(world, identities):
    traps = json.loads((world / "truth" / "quality.json").read_text())["identity_traps"]
    persons = read(world, "truth/persons.parquet")
    assert traps["shared_device_persons"] == persons.household_id.notna().sum() > 0
    assert traps["recycled_phone"] == persons.phone_previous_owner.notna().sum() > 0
    junk_email = identities[identities.value.str.strip().str.lower().isin(JUNK_EMAILS)]
    assert traps["junk_email"] == len(junk_email) > 10
    assert traps["junk_phone"] == identities.value.isin(JUNK_PHONES).sum() > 0


# ---------------------------------------------------------- response truth
#: rows of generate(600 persons, seed=3, chunk_size=250) recorded with GENERATOR_VERSION 1,
#: before truth/response/ existed: adding it must not move any other stream
V1_ROWS = {"contacts": 3388, "customers": 662, "events": 5155, "identities": 3743, "products": 3186,
           "responses": 91, "transactions": 14868}
V1_RECORDS = 1485
V1_FILES = {"_synth.json", "dataset.yaml", "products.parquet", "truth/persons.parquet", "truth/quality.json",
            "truth/records.parquet", *(f"{t}/part-{i:05d}.parquet" for t in TABLES for i in range(3))}


@pytest.fixture(scope="module")
def response(world) -> pd.DataFrame:
    return read_response(world)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_response_truth_leaves_every_other_file_as_before(tmp_path, monkeypatch):
    import sources.synth.generator as gen

    a = generate(tmp_path / "a", 600, seed=3, chunk_size=250)
    files_a = _files(a.path)
    response = {f for f in files_a if f.startswith("truth/response/")}
    assert response == {f"truth/response/part-{i:05d}.parquet" for i in range(3)}
    assert set(files_a) - response == V1_FILES
    assert a.rows == V1_ROWS and a.records == V1_RECORDS
    assert len(read_response(a.path)) == 600 * len(CATEGORIES)
    # the response draws come from a stream of their own: drawing them differently changes
    # nothing else, byte for byte
    original = gen._response
    monkeypatch.setattr(gen, "_response", lambda rng, *args: original(
        np.random.default_rng(rng.integers(2**63)), *args))
    b = generate(tmp_path / "b", 600, seed=3, chunk_size=250)
    files_b = _files(b.path)
    assert set(files_b) == set(files_a)
    for rel in set(files_a) - response - {"dataset.yaml"}:
        assert files_a[rel] == files_b[rel], rel
    assert any(files_a[rel] != files_b[rel] for rel in response)


def test_response_truth_schema_and_metadata(world, response):
    parts = sorted((world / "truth" / "response").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(3)]  # one per chunk
    for part in parts:
        schema = pq.read_schema(part)
        assert schema.remove_metadata() == RESPONSE_SCHEMA
        assert schema.metadata[b"horizon_days"] == b"28" and schema.metadata[b"as_of"] == b"2025-12-31"
    assert list(response.columns) == RESPONSE_SCHEMA.names
    assert response.attrs == {"horizon_days": 28, "as_of": "2025-12-31"}
    # every person x every category, once, persons in order
    assert len(response) == 2000 * len(CATEGORIES)
    assert response.person_id.tolist() == np.repeat(np.arange(2000), len(CATEGORIES)).tolist()
    assert response.category.tolist() == list(CATEGORIES) * 2000
    assert set(response.kind) == set(UPLIFT_KINDS)
    meta = json.loads((world / MARKER).read_text())
    assert meta["generator_version"] == 2 and meta["params"]["response_horizon_days"] == 28
    assert meta["truth"]["response"]["horizon_days"] == 28 and meta["truth"]["response"]["rows"] == 24000
    # not a table of the dataset
    assert set(open_directory(world).tables) == {*TABLES, "products"}


def test_response_probabilities_have_the_shape_of_their_kind(response):
    r = response
    assert r[["p_control", "p_treated"]].notna().all().all()
    assert ((r.p_control >= 0) & (r.p_control <= 1) & (r.p_treated >= 0) & (r.p_treated <= 1)).all()
    kind = r.kind
    dog, pers, sure, lost = (kind == "sleeping_dog"), (kind == "persuadable"), (kind == "sure_thing"), (
        kind == "lost_cause")
    assert (r.p_treated[dog] < r.p_control[dog]).all()
    assert (r.p_treated[pers] > r.p_control[pers]).all()
    uplift = r.p_treated - r.p_control
    assert (uplift[pers] >= 0.05).all() and (r.p_control[pers] <= 0.25).all()
    assert (uplift[dog] <= -0.15 * r.p_control[dog] + 1e-12).all()  # clearly below: at least 15 % less
    assert (r.p_control[sure] >= 0.15).all() and (uplift[sure] >= 0).all()
    assert (r.p_control[lost] <= 0.1).all() and (r.p_treated[lost] <= 0.12).all() and (uplift[lost] >= 0).all()
    assert r.p_control[sure].mean() > 3 * r.p_control[~sure].mean()
    # positive but modest on average, as in real retail
    assert 0.01 < uplift.mean() < 0.06


def test_response_kind_shares_match_params(response):
    """Within sampling error: a person's 12 categories are not independent, so the error is
    that of the mean over persons of their share of each kind."""
    expected = dict(zip(UPLIFT_KINDS, TRAPS.uplift_shares))
    per_person = pd.crosstab(response.person_id, response.kind, normalize="index")
    for kind, share in expected.items():
        col = per_person[kind]
        se = col.std() / np.sqrt(len(col))
        assert abs(col.mean() - share) < 4 * se + 0.005, (kind, col.mean(), share)


def test_response_follows_observable_behaviour(response, orders, persons):
    r = response.copy()
    last = orders[(orders.amount > 0) & (orders.timestamp >= END - pd.Timedelta(days=90))]
    n90 = last.groupby(["person", "category"]).order_id.nunique().rename("n90").reset_index()
    r = r.merge(n90.rename(columns={"person": "person_id"}), on=["person_id", "category"], how="left")
    r["n90"] = r.n90.fillna(0)
    by_kind = r.groupby("kind").n90.mean()
    assert by_kind["sure_thing"] > 3 * by_kind["persuadable"] and by_kind["sure_thing"] > 10 * by_kind["lost_cause"]
    assert r.p_control.corr(r.n90, method="spearman") > 0.4
    # a control group buys about as the history does (6-8 % of person x category per 28 days)
    assert 0.03 < r.p_control.mean() < 0.12
    person = persons.reindex(r.person_id)
    alive = person.dropout_at.isna().to_numpy()
    assert (r.kind[~alive] == "lost_cause").mean() > 0.95
    assert (r.kind[alive] == "lost_cause").mean() < 0.7
    # sleeping dogs buy often and ignore emails; persuadables respond to campaigns
    dog = (r.kind == "sleeping_dog").to_numpy()
    assert person.email_open_rate[dog & alive].mean() < person.email_open_rate[~dog & alive].mean() - 0.03
    assert person.purchase_rate[dog].mean() > person.purchase_rate[~dog & alive].mean()
    pers = (r.kind == "persuadable").to_numpy()
    assert person.response_propensity[pers].mean() > person.response_propensity[~pers & alive].mean()
    # persuadables like a category they have not adopted: families and baby products
    baby = (r.category == "baby").to_numpy()
    families = (person.segment == "families").to_numpy()
    assert (r.kind[baby & families] == "persuadable").mean() > 2 * (r.kind[baby & ~families] == "persuadable").mean()


def test_response_shares_and_horizon_are_knobs(tmp_path):
    two = SynthParams(persuadable_share=0.5, sure_thing_share=0.0, lost_cause_share=0.5, sleeping_dog_share=0.0)
    a = read_response(generate(tmp_path / "a", 300, seed=4, params=two).path)
    assert set(a.kind) == {"persuadable", "lost_cause"}
    assert abs((a.kind == "persuadable").mean() - 0.5) < 0.08
    short = read_response(generate(tmp_path / "b", 300, seed=4, params=SynthParams(response_horizon_days=7)).path)
    usual = read_response(generate(tmp_path / "c", 300, seed=4).path)
    assert short.attrs["horizon_days"] == 7 and usual.attrs["horizon_days"] == 28
    assert short.p_control.mean() < usual.p_control.mean()


@pytest.mark.parametrize("kwargs", [{"persuadable_share": 0.5}, {"lost_cause_share": -0.1, "sure_thing_share": 0.8},
                                    {"response_horizon_days": 0}], ids=["sum", "negative", "horizon"])
def test_response_params_are_validated(kwargs):
    with pytest.raises(ValueError):
        SynthParams(**kwargs)


def test_person_of_record_maps_the_ids_of_the_source_tables(world, person_of):
    mapping = person_of_record(world)
    assert list(mapping.columns) == ["source_system", "customer_id", "person_id"]
    assert mapping.customer_id.is_unique and dict(zip(mapping.customer_id, mapping.person_id)) == person_of
    for table in ("transactions", "customers"):
        df = read(world, table).dropna(subset=["customer_id"])
        joined = df.merge(mapping, on=["source_system", "customer_id"], how="left")
        assert joined.person_id.notna().all(), table
    assert set(mapping.person_id) == set(range(2000))


def test_truth_readers_refuse_a_directory_without_truth(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_response(tmp_path)
    with pytest.raises(FileNotFoundError):
        person_of_record(tmp_path)
