"""Online store: typed round trip, atomic publish under concurrent reads, pruning, refusals."""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

from base.home import Home
from features.online import open_online_store
from features.online_store import (
    NoSnapshotError,
    PublishedSnapshot,
    SnapshotUnavailableError,
    SnapshotValidationError,
    SQLiteOnlineStore,
)

AS_OF = date(2024, 3, 31)
NAN = float("nan")

GOLDEN_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("as_of", pa.date32()), ("orders_90d", pa.int64()),
    ("spend_90d", pa.float64()), ("segment", pa.string()), ("last_order", pa.date32()),
    ("is_member", pa.bool_()),
])
# Hand-written rows covering NaN, null strings, null dates and null bools.
GOLDEN_ROWS = [
    ("c1", AS_OF, 3, 10.5, "gold", date(2024, 3, 1), True),
    ("c2", AS_OF, 0, NAN, None, None, False),
    ("c3", AS_OF, 12, 0.0, "silver", date(2023, 12, 31), None),
    ("c4", AS_OF, 1, 1e9, "gold", date(2024, 3, 30), True),
]
FEATURES = ["orders_90d", "spend_90d", "segment", "last_order", "is_member"]


def table_of(rows: list[tuple], schema: pa.Schema = GOLDEN_SCHEMA) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array(col, f.type, from_pandas=True) for col, f in zip(columns, schema)]
    return pa.table(arrays, schema=schema)


def write_snapshot(directory: Path, table: pa.Table, parts: int = 2) -> Path:
    """A feature-builder-like snapshot directory: ``parts`` Parquet files."""
    directory.mkdir(parents=True)
    step = max(1, -(-table.num_rows // parts))
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), directory / f"part-{i:05d}.parquet")
    return directory


def expected(row: tuple) -> dict[str, object]:
    return dict(zip(GOLDEN_SCHEMA.names, row))


def same(a: object, b: object) -> bool:
    """Equal values of the same type, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_same_record(got: dict[str, object] | None, want: dict[str, object]) -> None:
    assert got is not None
    assert list(got) == list(want)
    bad = {k: (got[k], want[k]) for k in want if not same(got[k], want[k])}
    assert not bad, bad


@pytest.fixture
def golden_dir(tmp_path: Path) -> Path:
    return write_snapshot(tmp_path / "snap-golden", table_of(GOLDEN_ROWS))


@pytest.fixture
def store(tmp_path: Path) -> SQLiteOnlineStore:
    with SQLiteOnlineStore(tmp_path / "online", dataset="demo", grace_seconds=0) as s:
        yield s


@pytest.fixture
def published(store: SQLiteOnlineStore, golden_dir: Path) -> PublishedSnapshot:
    return store.publish(golden_dir, as_of=AS_OF, metadata={"feature_set": "v1"})


def uniform_snapshot(directory: Path, k: int, customers: int = 40) -> Path:
    """Every value of snapshot ``k`` encodes ``k``: a row mixing two snapshots is detectable."""
    schema = pa.schema([("customer_id", pa.string()), ("as_of", pa.date32()), ("n", pa.int64()),
                        ("x", pa.float64()), ("s", pa.string()), ("d", pa.date32())])
    rows = [(f"c{i}", AS_OF, k, float(k), str(k), date(2000, 1, k)) for i in range(customers)]
    return write_snapshot(directory, table_of(rows, schema))


def k_of(record: dict[str, object]) -> set[object]:
    return {record["n"], int(record["x"]), int(record["s"]), record["d"].day}  # type: ignore[union-attr]


# -- round trip ----------------------------------------------------------------------

@pytest.mark.parametrize("row", GOLDEN_ROWS, ids=[r[0] for r in GOLDEN_ROWS])
def test_get_round_trips_values_and_types(store, published, row):
    assert_same_record(store.get(row[0]), expected(row))


def test_get_unknown_id_is_none(store, published):
    assert store.get("nobody") is None
    assert store.get("") is None


def test_get_rejects_non_string_ids(store, published):
    with pytest.raises(TypeError, match="must be a str"):
        store.get(1)  # type: ignore[arg-type]


def test_get_many_keeps_request_order_and_marks_unknown_ids(store, published):
    got = store.get_many(["c3", "nobody", "c1", "c3"])
    want = pd.DataFrame({
        "customer_id": pd.array(["c3", "nobody", "c1", "c3"], dtype="str"),
        "found": [True, False, True, True],
        "as_of": pd.Series([AS_OF, None, AS_OF, AS_OF], dtype=object),
        "orders_90d": pd.array([12, None, 3, 12], dtype="Int64"),
        "spend_90d": [0.0, NAN, 10.5, 0.0],
        "segment": pd.array(["silver", None, "gold", "silver"], dtype="str"),
        "last_order": pd.Series([date(2023, 12, 31), None, date(2024, 3, 1), date(2023, 12, 31)],
                                dtype=object),
        "is_member": pd.array([None, None, True, None], dtype="boolean"),
    })
    assert_frame_equal(got, want)


def test_get_many_of_nothing_has_the_same_columns_and_dtypes(store, published):
    empty = store.get_many([])
    full = store.get_many(["c1"])
    assert len(empty) == 0
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()


def test_get_many_agrees_with_get(store, published):
    frame = store.get_many([r[0] for r in GOLDEN_ROWS])
    for record in frame.drop(columns="found").to_dict("records"):
        single = store.get(record["customer_id"])
        assert single is not None
        for name, value in single.items():
            other = record[name]
            assert (value is None and pd.isna(other)) or same(value, other) or value == other, name


def test_current_describes_the_published_snapshot(store, published):
    current = store.current()
    assert current == published
    assert current.as_of == AS_OF and current.rows == 4
    assert current.columns == {"customer_id": "string", "as_of": "date", "orders_90d": "int64",
                               "spend_90d": "float64", "segment": "string", "last_order": "date",
                               "is_member": "bool"}
    assert current.metadata == {"feature_set": "v1"}
    assert current.path.is_file() and stat.S_IMODE(current.path.stat().st_mode) == 0o444  # immutable
    assert store.feature_names() == FEATURES == current.feature_names


def test_schema_fingerprint_depends_on_schema_only(store, published, tmp_path):
    other_values = [(r[0], AS_OF, 99, 1.0, "x", None, False) for r in GOLDEN_ROWS]
    second = store.publish(write_snapshot(tmp_path / "snap-2", table_of(other_values)), as_of=AS_OF)
    assert second.version != published.version
    assert second.schema_fingerprint == published.schema_fingerprint
    fewer_columns = pa.schema(list(GOLDEN_SCHEMA)[:3])
    narrower = write_snapshot(tmp_path / "snap-3", table_of([r[:3] for r in GOLDEN_ROWS], fewer_columns))
    assert store.publish(narrower, as_of=AS_OF).schema_fingerprint != published.schema_fingerprint


def test_warm_up_returns_the_served_snapshot(store, published):
    assert store.warm_up() == published
    assert_same_record(store.get("c4"), expected(GOLDEN_ROWS[3]))


def test_int_column_with_nulls_round_trips(store, tmp_path):
    schema = pa.schema([("customer_id", pa.string()), ("as_of", pa.date32()), ("n", pa.int64())])
    store.publish(write_snapshot(tmp_path / "s", table_of([("a", AS_OF, None), ("b", AS_OF, 2**62)], schema)),
                  as_of=AS_OF)
    assert store.get("a")["n"] is None
    assert store.get("b")["n"] == 2**62


# -- before anything is published ---------------------------------------------------------

def test_reading_before_any_publish_says_what_to_run(store):
    assert store.current() is None
    for read in (lambda: store.get("c1"), lambda: store.get_many(["c1"]), store.feature_names, store.warm_up):
        with pytest.raises(NoSnapshotError,
                           match=r"no snapshot published for dataset 'demo'.*cvm features publish"):
            read()


def test_open_online_store_roots_under_home(tmp_path, golden_dir):
    home = Home(tmp_path / "home")
    store = open_online_store(home, "Complete Journey")
    assert not home.online("Complete Journey").exists()  # nothing created by opening
    store.publish(golden_dir, as_of=AS_OF)
    assert (home.online("Complete Journey") / "CURRENT.json").is_file()
    assert_same_record(open_online_store(home, "Complete Journey").get("c1"), expected(GOLDEN_ROWS[0]))
    with pytest.raises(ValueError, match="unknown online store backend"):
        open_online_store(home, "x", backend="memcached")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="set CVM_REDIS_URL"):
        open_online_store(home, "x", backend="redis", redis_url="")


# -- publishing again -----------------------------------------------------------------------

def test_an_open_reader_sees_the_next_publish(store, tmp_path):
    store.publish(uniform_snapshot(tmp_path / "k1", 1), as_of=AS_OF)
    reader = SQLiteOnlineStore(store.root)
    assert k_of(reader.get("c0")) == {1}
    second = store.publish(uniform_snapshot(tmp_path / "k2", 2), as_of=AS_OF)
    assert k_of(reader.get("c0")) == {2}
    assert reader.current().version == second.version
    reader.close()


def test_concurrent_readers_see_one_whole_snapshot_at_a_time(tmp_path):
    writer = SQLiteOnlineStore(tmp_path / "online", keep=3, grace_seconds=0)
    dirs = {k: uniform_snapshot(tmp_path / f"k{k}", k) for k in (1, 2)}
    writer.publish(dirs[1], as_of=AS_OF)
    shared = SQLiteOnlineStore(writer.root)  # used by two threads at once
    own = SQLiteOnlineStore(writer.root)  # a reader of its own, switching on its own
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[int] = set()
    reads = [0, 0, 0]

    def read_single(slot: int, reader: SQLiteOnlineStore) -> None:
        while not stop.is_set():
            ks = k_of(reader.get(f"c{reads[slot] % 40}"))  # type: ignore[arg-type]
            assert len(ks) == 1, ks
            seen.update(ks)
            reads[slot] += 1

    def read_many(slot: int, reader: SQLiteOnlineStore) -> None:
        ids = [f"c{i}" for i in range(40)] + ["nobody"]
        while not stop.is_set():
            frame = reader.get_many(ids)
            assert frame["found"].sum() == 40
            values = set(frame["n"].dropna()) | set(frame["x"].dropna().astype(int)) | \
                set(frame["s"].dropna().astype(int)) | {d.day for d in frame["d"].dropna()}
            assert len(values) == 1, values
            reads[slot] += 1

    def guarded(fn, *args) -> threading.Thread:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                stop.set()
        return threading.Thread(target=run)

    threads = [guarded(read_single, 0, shared), guarded(read_many, 1, shared), guarded(read_single, 2, own)]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            before, deadline = list(reads), time.monotonic() + 10
            writer.publish(dirs[2 if i % 2 == 0 else 1], as_of=AS_OF)
            # Let every reader run against this version (and maybe catch the next publish mid-read).
            while not stop.is_set() and time.monotonic() < deadline and \
                    any(now < was + 5 for now, was in zip(reads, before)):
                stop.wait(0.001)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert seen == {1, 2}
    assert all(n > 10 for n in reads), reads
    assert len(list((writer.root / "snapshots").glob("*.sqlite"))) == 3
    shared.close()
    own.close()


def test_threads_sharing_one_store_get_their_own_rows(store, published):
    def lookup(i: int) -> bool:
        row = GOLDEN_ROWS[i % len(GOLDEN_ROWS)]
        got = store.get(row[0])
        return got is not None and all(same(got[k], v) for k, v in expected(row).items())

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(lookup, range(400)))


# -- pruning -----------------------------------------------------------------------------

def test_old_versions_are_pruned_to_keep(tmp_path):
    store = SQLiteOnlineStore(tmp_path / "online", keep=3, grace_seconds=0)
    versions = [store.publish(uniform_snapshot(tmp_path / f"k{k}", k), as_of=AS_OF).version
                for k in range(1, 6)]
    kept = sorted(p.stem for p in (store.root / "snapshots").glob("*.sqlite"))
    assert kept == versions[-3:]
    assert not list(store.root.glob(".build-*"))


def test_recently_superseded_versions_wait_for_the_grace_period(tmp_path):
    store = SQLiteOnlineStore(tmp_path / "online", keep=1, grace_seconds=3600)
    for k in range(1, 4):
        store.publish(uniform_snapshot(tmp_path / f"k{k}", k), as_of=AS_OF)
    assert len(list((store.root / "snapshots").glob("*.sqlite"))) == 3


# -- refused snapshots leave the current one in place ---------------------------------------------

def _duplicate_ids() -> pa.Table:
    return table_of(GOLDEN_ROWS + [GOLDEN_ROWS[1]])


REFUSALS = {
    "duplicate ids": (_duplicate_ids, r"'customer_id' .* not unique: 1 ids appear more than once"),
    "no customer_id": (lambda: table_of(GOLDEN_ROWS).drop_columns(["customer_id"]),
                       r"no 'customer_id' column"),
    "zero rows": (lambda: table_of([]), "zero rows"),
    "null customer_id": (lambda: table_of([(None,) + GOLDEN_ROWS[0][1:]]),
                         "'customer_id' .* has null values"),
    "wrong as_of": (lambda: table_of([(r[0], AS_OF - timedelta(days=1)) + r[2:] for r in GOLDEN_ROWS]),
                    r"'as_of' .* holds 2024-03-30\.\.2024-03-30"),
    "unsupported type": (lambda: table_of(GOLDEN_ROWS).append_column(
        "seen_at", pa.array([pd.Timestamp("2024-01-01")] * 4, pa.timestamp("us"))), r"seen_at \(timestamp"),
    "reserved name": (lambda: table_of(GOLDEN_ROWS).append_column("found", pa.array([1, 2, 3, 4])),
                      "reserved"),
    "names differing by case": (lambda: table_of(GOLDEN_ROWS).append_column("Segment", pa.array(["a"] * 4)),
                                "differ only by case"),
}


@pytest.mark.parametrize("make, message", REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_snapshot_leaves_current_in_place(store, published, tmp_path, make, message):
    bad = write_snapshot(tmp_path / "bad", make(), parts=1)
    with pytest.raises(SnapshotValidationError, match=message):
        store.publish(bad, as_of=AS_OF)
    assert store.current() == published
    assert SQLiteOnlineStore(store.root).current() == published
    assert_same_record(store.get("c1"), expected(GOLDEN_ROWS[0]))
    assert len(list((store.root / "snapshots").glob("*.sqlite"))) == 1
    assert not list(store.root.glob(".build-*"))


def test_directory_without_parts_is_refused(store, published, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotValidationError, match="no part-"):
        store.publish(tmp_path / "empty", as_of=AS_OF)
    assert store.current() == published


def test_parts_that_disagree_are_refused(store, published, tmp_path):
    bad = write_snapshot(tmp_path / "bad", table_of(GOLDEN_ROWS[:2]), parts=1)
    other = table_of(GOLDEN_ROWS[2:]).set_column(2, "orders_90d", pa.array(["3", "4"]))
    pq.write_table(other, bad / "part-00001.parquet")
    with pytest.raises(SnapshotValidationError,
                       match=r"orders_90d is int64 in part-00000.parquet, string in part-00001.parquet"):
        store.publish(bad, as_of=AS_OF)
    assert store.current() == published
    assert not list(store.root.glob(".build-*"))


def test_as_of_must_be_a_date(store, golden_dir):
    from datetime import datetime

    with pytest.raises(TypeError, match="as_of"):
        store.publish(golden_dir, as_of=datetime(2024, 3, 31))  # type: ignore[arg-type]


# -- a damaged store ---------------------------------------------------------------------------

def _corrupt(path: Path) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(b"not a database" * 1000)


def _delete(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage", [_corrupt, _delete], ids=["corrupt", "missing"])
def test_damaged_file_behind_pointer_keeps_the_previous_snapshot(store, tmp_path, caplog, damage):
    first = store.publish(uniform_snapshot(tmp_path / "k1", 1), as_of=AS_OF)
    serving_reader = SQLiteOnlineStore(store.root)
    assert k_of(serving_reader.get("c0")) == {1}
    second = store.publish(uniform_snapshot(tmp_path / "k2", 2), as_of=AS_OF)
    damage(second.path)

    with caplog.at_level(logging.ERROR, logger="features.online_store"):
        assert k_of(serving_reader.get("c0")) == {1}  # keeps serving what it had
        assert k_of(serving_reader.get("c1")) == {1}
    assert serving_reader.current() == first
    assert sum(second.version in r.getMessage() for r in caplog.records) == 1  # logged once, not per call
    with pytest.raises(SnapshotUnavailableError, match=second.version):
        SQLiteOnlineStore(store.root).get("c0")  # nothing to fall back on
    assert first.path.is_file()

    store.publish(uniform_snapshot(tmp_path / "k3", 3), as_of=AS_OF)  # publishing again repairs it
    assert k_of(serving_reader.get("c0")) == {3}
    assert k_of(SQLiteOnlineStore(store.root).get("c0")) == {3}


def test_unreadable_pointer_is_a_clear_error(store, published, golden_dir):
    (store.root / "CURRENT.json").write_text("{not json")
    with pytest.raises(SnapshotUnavailableError, match="CURRENT.json is unreadable"):
        SQLiteOnlineStore(store.root).get("c1")
    store.publish(golden_dir, as_of=AS_OF)
    assert_same_record(SQLiteOnlineStore(store.root).get("c1"), expected(GOLDEN_ROWS[0]))


# -- no customer data in logs ---------------------------------------------------------------------

def test_logs_and_errors_hold_no_customer_ids(store, tmp_path, caplog):
    rows = [(f"SECRET-{i}", AS_OF, i, 0.5, "gold", None, True) for i in range(3)]
    with caplog.at_level(logging.DEBUG, logger="features.online_store"):
        store.publish(write_snapshot(tmp_path / "ok", table_of(rows)), as_of=AS_OF)
        store.get("SECRET-0")
        store.get_many(["SECRET-1", "SECRET-404"])
        with pytest.raises(SnapshotValidationError) as refused:
            store.publish(write_snapshot(tmp_path / "dup", table_of(rows + rows[:1])), as_of=AS_OF)
    assert caplog.records  # publishing is logged
    assert "SECRET" not in caplog.text
    assert "SECRET" not in str(refused.value)


def test_contact_history_is_published_with_the_snapshot(store, golden_dir, tmp_path):
    """The contacts handed to publish come back from the served snapshot as they were
    (whole seconds, UTC); a snapshot published without them has none, and a contact file
    without the columns readers rely on is refused before anything changes."""
    history = pd.DataFrame({"customer_id": ["c1", "c1", "c2"], "campaign_id": ["k1", "k2", "k1"],
                            "timestamp": pd.to_datetime(["2024-03-01 09:30:00", "2024-03-29 23:59:59",
                                                         "2023-12-31 00:00:00"])})
    contacts = tmp_path / "contacts"
    contacts.mkdir()
    history.to_parquet(contacts / "part-0.parquet", index=False)
    snap = store.publish(golden_dir, as_of=AS_OF, contacts=contacts)
    assert snap.contacts == 3 and store.current().contacts == 3
    got = store.contacts().sort_values(["customer_id", "timestamp"]).reset_index(drop=True)
    want = history.sort_values(["customer_id", "timestamp"]).reset_index(drop=True)
    assert got.customer_id.tolist() == want.customer_id.tolist()
    assert got.campaign_id.tolist() == want.campaign_id.tolist()
    assert (got.timestamp.to_numpy() == want.timestamp.to_numpy()).all()
    reader = SQLiteOnlineStore(store.root)  # another reader of the same store sees the same
    assert len(reader.contacts()) == 3

    store.publish(golden_dir, as_of=AS_OF)
    assert store.current().contacts is None and store.contacts() is None

    bad = tmp_path / "bad"
    bad.mkdir()
    history.drop(columns="campaign_id").to_parquet(bad / "part-0.parquet", index=False)
    before = store.current().version
    with pytest.raises(SnapshotValidationError, match="campaign_id"):
        store.publish(golden_dir, as_of=AS_OF, contacts=bad)
    assert store.current().version == before
