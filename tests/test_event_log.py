"""The event log: checks that name the event and the field, all-or-nothing batches, idempotent
replays, identifiers resolved to golden records, and durability across a killed writer."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from profiles.events import ingest, resolve_customers
from profiles.identifier_index import ANONYMOUS_PREFIX, IdentifierLookup, anonymous_id, identifier_index
from sources.event_log.records import MAX_EVENTS, EventError, EventLimits, check_batch
from sources.event_log.store import EventLog

NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)


def _event(i: int, **kw) -> dict:
    return {"event_id": f"e{i}", "customer_id": "C1", "type": "view", "timestamp": "2025-07-01T10:00:00Z",
            "properties": {"category": "dairy"}, **kw}


@pytest.mark.parametrize(("bad", "names"), [
    ({"type": "Add To Cart"}, "events[1] (event_id 'e1'): type"),
    ({"timestamp": "2025-07-01T10:00:00"}, "events[1] (event_id 'e1'): timestamp"),  # no time zone
    ({"timestamp": "2025-07-01T13:00:00Z"}, "events[1] (event_id 'e1'): timestamp: 3,600 s ahead"),
    ({"type": "purchase", "properties": {"order_id": "o1"}}, "properties.amount: a purchase needs a finite number"),
    ({"type": "purchase", "properties": {"amount": 3.5}}, "properties.order_id"),
    ({"customer_id": None}, "customer_id, identifier: give exactly one of them"),
    ({"identifier": {"type": "email", "value": "a@b.c"}}, "customer_id, identifier: give exactly one of them"),
    ({"properties": {"blob": "x" * 20_000}}, "properties: 20,011 bytes as JSON, at most 16,384"),
    ({"colour": "red"}, "events[1] (event_id 'e1'): colour: Extra inputs are not permitted"),
])
def test_a_bad_event_refuses_the_batch_naming_event_and_field(bad, names):
    with pytest.raises(EventError) as err:
        check_batch([_event(0), _event(1, **bad)], now=NOW)
    assert names in str(err.value) and "nothing of this batch was written" in str(err.value)


def test_batch_limits():
    with pytest.raises(EventError, match="empty"):
        check_batch([], now=NOW)
    with pytest.raises(EventError, match=f"at most {MAX_EVENTS:,}"):
        check_batch([_event(i) for i in range(MAX_EVENTS + 1)], now=NOW)
    assert len(check_batch([_event(0, timestamp="2025-07-01T12:04:00Z")], now=NOW, limits=EventLimits())) == 1


def test_append_is_all_or_nothing_and_replays_are_duplicates(tmp_path):
    log = EventLog(tmp_path / "events.sqlite")
    lookup = IdentifierLookup(pd.DataFrame({"id_type": [], "value": [], "customer_id": []}))
    counts = ingest([_event(0), _event(1), _event(1)], log, lookup, now=NOW)
    assert (counts.received, counts.written, counts.duplicates) == (3, 2, 1)
    again = ingest([_event(1), _event(2)], log, lookup, now=NOW)  # a retried batch plus one new event
    assert (again.written, again.duplicates) == (1, 1)
    with pytest.raises(EventError):
        ingest([_event(3), _event(4, type="BAD")], log, lookup, now=NOW)
    frame = log.frame()
    assert frame["event_id"].tolist() == ["e0", "e1", "e2"]  # e3 was not written: its batch was refused
    assert frame["occurred_us"].iloc[0] == int(datetime(2025, 7, 1, 10, tzinfo=UTC).timestamp()) * 1_000_000
    log.close()


def test_identifiers_resolve_to_the_golden_record_by_the_resolvers_rules():
    identities = pd.DataFrame({
        "source_system": ["crm", "web", "web", "pos", "pos"],
        "source_id": ["c1", "w1", "w2", "p1", "p2"],
        "id_type": ["email", "Email", "phone", "phone", "phone"],
        "value": ["Ann.Lee@Example.com", " ANN.LEE@EXAMPLE.COM", "020 7946 0000", "+44 20 7946 0000",
                  "07700 900123"],
    })
    mapping = pd.DataFrame({"source_system": ["crm", "web", "web", "pos", "pos"],
                            "source_id": ["c1", "w1", "w2", "p1", "p2"],
                            "customer_id": ["G1", "G1", "G2", "G3", "G3"]})
    index = identifier_index(identities, mapping)
    # the landline is held by G2 and G3: it names no one and is left out; both spellings of the email
    # normalise to one value of G1's
    assert sorted(index["customer_id"]) == ["G1", "G3"]
    lookup = IdentifierLookup(index)
    checked = check_batch([
        _event(0, customer_id=None, identifier={"type": "email", "value": " ANN.LEE@example.com"}),
        _event(1, customer_id=None, identifier={"type": "phone", "value": "+447700900123"}),
        _event(2, customer_id=None, identifier={"type": "phone", "value": "02079460000"}),  # shared: unknown
        _event(3),
    ], now=NOW)
    got = resolve_customers(checked, lookup)
    assert got[:2] == ["G1", "G3"] and got[3] == "C1"
    assert got[2].startswith(ANONYMOUS_PREFIX) and got[2] == anonymous_id("phone", "442079460000")  # digits with the country code
    with pytest.raises(EventError, match=r"events\[2\].*no customer has this phone"):
        resolve_customers(checked, lookup, unknown="reject")
    bad = check_batch([_event(0, customer_id=None, identifier={"type": "email", "value": "not-an-email"})], now=NOW)
    with pytest.raises(EventError, match="not a valid email"):
        resolve_customers(bad, lookup)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.server)])
def test_acknowledged_events_survive_a_killed_writer(tmp_path, backend, request):
    """A writer appends batches and prints each acknowledgement, then is SIGKILLed mid-run:
    every acknowledged event is in the log (the SQLite file, or a real Redis server), and none twice."""
    path = tmp_path / "events.sqlite"
    if backend == "redis":
        import uuid

        from sources.event_log.redis_log import RedisEventLog

        url, name = request.getfixturevalue("redis_url"), f"killed-{uuid.uuid4().hex[:8]}"
        opener = f"RedisEventLog({url!r}, {name!r})"
        reopen = lambda: RedisEventLog(url, name)
    else:
        opener = f"EventLog({str(path)!r})"
        reopen = lambda: EventLog(path)
    script = textwrap.dedent(f"""
        import sys
        from datetime import UTC, datetime
        import pandas as pd
        from profiles.events import ingest
        from profiles.identifier_index import IdentifierLookup
        from sources.event_log.redis_log import RedisEventLog
        from sources.event_log.store import EventLog
        log = {opener}
        lookup = IdentifierLookup(pd.DataFrame({{"id_type": [], "value": [], "customer_id": []}}))
        now = datetime(2025, 7, 1, 12, tzinfo=UTC)
        for b in range(100000):
            batch = [{{"event_id": f"b{{b}}-{{i}}", "customer_id": "C", "type": "view",
                       "timestamp": "2025-07-01T10:00:00Z"}} for i in range(100)]
            ingest(batch, log, lookup, now=now)
            print(b, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = []
    for line in proc.stdout:  # wait for acknowledgements (no sleep), then kill without warning
        acked.append(int(line))
        if len(acked) == 20:
            proc.kill()
            break
    proc.wait()
    frame = reopen().frame()
    assert frame["event_id"].is_unique
    have = set(frame["event_id"])
    assert all(f"b{b}-{i}" in have for b in acked for i in range(100))
    assert len(frame) % 100 == 0  # batches are whole: none half-written


def test_cvm_events_ingest_writes_a_file_and_names_a_bad_event(tiny_dataset, tmp_path):
    import json

    from typer.testing import CliRunner

    from cvm.cli import app

    good = tmp_path / "events.jsonl"
    good.write_text("\n".join(json.dumps(_event(i)) for i in (0, 1, 1)) + "\n")
    home = tmp_path / "home"
    args = ["--dataset", str(tiny_dataset), "--home", str(home)]
    r = CliRunner().invoke(app, ["events", "ingest", str(good), *args])
    assert r.exit_code == 0, r.output
    assert "3 events, 2 written, 1 duplicates skipped" in " ".join(r.output.split())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"events": [_event(5), _event(6, timestamp="yesterday")]}))
    r = CliRunner().invoke(app, ["events", "ingest", str(bad), *args])
    assert r.exit_code == 2 and "events[1] (event_id 'e6'): timestamp" in " ".join(r.output.split())
    logs = list((home / "events").glob("*/events.sqlite"))
    assert len(logs) == 1 and EventLog(logs[0]).frame()["event_id"].tolist() == ["e0", "e1"]


def test_the_nightly_build_reads_the_event_log_as_if_the_rows_were_in_the_files(tmp_path):
    """Posted events are the batch's source too: a snapshot built with them in the event log equals
    the snapshot built from files with the same rows appended."""
    from base.engines import open_engine
    from base.home import Home
    from features.pipeline import build_snapshot
    from sources.dataset import resolve_dataset
    from tests.conftest import T, tiny_tables, write_dataset

    posted = [
        {"event_id": "p1", "customer_id": "B", "type": "purchase", "timestamp": "2024-02-20T10:00:00Z",
         "properties": {"order_id": "o9", "amount": 12.5, "category": "dairy"}},
        {"event_id": "p2", "customer_id": "B", "type": "add_to_cart", "timestamp": "2024-02-20T09:00:00Z"},
        {"event_id": "p3", "customer_id": "E", "type": "view", "timestamp": "2024-02-25T09:00:00Z"},
        {"event_id": "p4", "customer_id": "A", "type": "purchase", "timestamp": "2024-03-01T09:00:00Z",
         "properties": {"order_id": "o10", "amount": 99.0, "category": "dairy"}},  # on as_of: not counted
    ]
    tables = tiny_tables()
    with_log = write_dataset(tmp_path / "a" / "shop", tables)
    home_a = Home(tmp_path / "home-a")
    log = EventLog(home_a.events("shop", ensure=True) / "events.sqlite")
    lookup = IdentifierLookup(pd.DataFrame({"id_type": [], "value": [], "customer_id": []}))
    ingest(posted, log, lookup, now=datetime(2024, 3, 5, tzinfo=UTC))
    log.close()
    files = dict(tables)
    files["transactions"] = pd.concat([tables["transactions"], pd.DataFrame(
        [("B", "o9", T("2024-02-20 10:00"), 12.5, "dairy", None), ("A", "o10", T("2024-03-01 09:00"), 99.0, "dairy", None)],
        columns=["customer_id", "order_id", "timestamp", "amount", "category", "discount"])], ignore_index=True)
    files["events"] = pd.concat([tables["events"], pd.DataFrame(
        # a posted purchase is also an event of type purchase, as web tracking sends it
        [("B", T("2024-02-20 10:00"), "purchase"), ("B", T("2024-02-20 09:00"), "add_to_cart"),
         ("E", T("2024-02-25 09:00"), "view"), ("A", T("2024-03-01 09:00"), "purchase")],
        columns=list(tables["events"].columns)[:3])], ignore_index=True)
    in_files = write_dataset(tmp_path / "b" / "shop", files)
    out = {}
    for key, root, home in (("log", with_log, home_a), ("files", in_files, Home(tmp_path / "home-b"))):
        with open_engine("duckdb") as engine:
            res = build_snapshot(resolve_dataset(str(root), home), date(2024, 3, 1), engine, home)
        out[key] = pd.read_parquet(res.path).sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(out["log"], out["files"], check_dtype=False)
    b = out["log"].set_index("customer_id").loc["B"]
    assert b["orders_total"] == 3  # o5, o6 and the posted o9
