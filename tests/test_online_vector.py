"""Fresh features: the morning snapshot plus a day of posted events equals the next morning's
snapshot, for every feature the vector maintains (``features.fresh``)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from base.engines import open_engine
from base.home import Home
from features.config import FeatureConfig
from features.definitions import DatasetShape, declare
from features.fresh import DayActivity, Horizon, fresh_vector, maintained, not_maintained
from features.online_fresh import FreshVectors
from features.pipeline import build_snapshot
from features.publish import publish_snapshot
from profiles.events import ingest
from profiles.identifier_index import IdentifierLookup
from sources.dataset import resolve_dataset
from sources.event_log.store import EventLog
from tests.conftest import tiny_tables, write_dataset

S = date(2024, 3, 1)  # the morning snapshot; the day of events; S+1 the next morning's snapshot


def _day_of_events() -> list[dict]:
    """A hand-made day S of events (UTC) for the tiny customers."""
    def ev(i, cid, kind, hhmm, **props):
        return {"event_id": f"d{i}", "customer_id": cid, "type": kind, "timestamp": f"2024-03-01T{hhmm}:00Z",
                **({"properties": props} if props else {})}

    return [
        # A's cart of 02-29 10:00 was judged abandoned by base(S+1) (no order before S): this
        # purchase 23 h later rescues it; it is A's order o4 of the files, posted instead
        ev(1, "A", "purchase", "09:00", order_id="o4", amount=100.0, category="dairy"),
        ev(2, "A", "view", "08:00"),
        # B: two lines of one order and a second order; a cart at 03:00 with no order within 6 h
        ev(3, "B", "add_to_cart", "03:00"),
        ev(4, "B", "purchase", "11:00", order_id="o11", amount=7.25, category="bakery"),
        ev(5, "B", "purchase", "11:00", order_id="o11", amount=2.5, category="grocery"),
        ev(6, "B", "purchase", "20:30", order_id="o12", amount=-3.0, category="grocery"),  # a return
        ev(7, "B", "wishlist", "12:00"),  # not a counted type: "other"
        # C's first order ever (no row in the morning snapshot)
        ev(8, "C", "purchase", "08:00", order_id="o7", amount=40.0, category="grocery"),
        # D: activity without an order; a cart at 10:00 judged abandoned with 6 h (no order after it)
        ev(9, "D", "email_open", "07:00"),
        ev(10, "D", "add_to_cart", "10:00"),
        # E: events only, never an order: no vector, as no snapshot row
        ev(11, "E", "view", "09:00"),
        # arrives after the purchase it precedes: the order of arrival does not matter
        ev(12, "A", "add_to_cart", "08:30"),
    ]


def _morning_files() -> dict[str, pd.DataFrame]:
    """The tiny dataset as the files stand on the morning of S: nothing from S on (day S comes as events)."""
    out = {}
    for name, frame in tiny_tables().items():
        col = "timestamp" if "timestamp" in frame.columns else "updated_at"
        out[name] = frame[~(frame[col] >= pd.Timestamp(S))].reset_index(drop=True)
    return out


def _build(root, home, as_of, config):
    with open_engine("duckdb") as engine:
        return build_snapshot(resolve_dataset(str(root), home), as_of, engine, home, config=config)


def _equal(a, b) -> bool:
    a_null = a is None or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return abs(float(a) - float(b)) <= 1e-9


@pytest.mark.parametrize("cart_hours, backend", [(24, "sqlite"), (6, "sqlite"),
                                                 pytest.param(24, "redis", marks=pytest.mark.server)])
def test_a_replayed_day_equals_the_next_mornings_snapshot_on_every_maintained_feature(tmp_path, cart_hours, backend,
                                                                                    request, monkeypatch):
    """On the embedded event log and on Redis (the event stream, and the online store it publishes to)."""
    import uuid

    from sources.event_log.open import open_event_log

    name = "shop"
    if backend == "redis":
        monkeypatch.setenv("CVM_REDIS_URL", request.getfixturevalue("redis_url"))
        name = f"shop{uuid.uuid4().hex[:8]}"  # a key space of its own on the session's server
    config = FeatureConfig(abandoned_cart_hours=cart_hours)
    root = write_dataset(tmp_path / name, _morning_files(),
                         yaml_text=f"name: {name}\ncategories: [grocery, dairy, bakery]\n")
    home = Home(tmp_path / "home")
    morning = _build(root, home, S, config)
    published = publish_snapshot(home, name, morning.path, S)
    home.events(name, ensure=True)
    log = open_event_log(home, name)
    assert type(log).__name__ == ("RedisEventLog" if backend == "redis" else "EventLog")
    empty = IdentifierLookup(pd.DataFrame({"id_type": [], "value": [], "customer_id": []}))
    fresh = FreshVectors(home.online(name), open_event_log(home, name), published.version, S)
    assert fresh.vectors(["A", "B"]) == {}  # nothing posted yet: the snapshot stands
    day = _day_of_events()
    ingest(day[:6], log, empty, now=datetime(2024, 3, 1, 23, 59, tzinfo=UTC))
    assert set(fresh.vectors(["A", "B", "C"])) == {"A", "B"}  # seen as soon as it is acknowledged
    ingest(day, log, empty, now=datetime(2024, 3, 1, 23, 59, tzinfo=UTC))  # a replay: duplicates skipped
    log.close()

    vectors = fresh.vectors(["A", "B", "C", "D", "E", "nobody"])
    next_morning = pd.read_parquet(_build(root, home, date(2024, 3, 2), config).path).set_index("customer_id")
    fs = morning.feature_set
    kept = maintained(fs)
    assert set(vectors) == {"A", "B", "C", "D", "E"}
    assert vectors["E"][0] is None and "E" not in next_morning.index  # no order: no vector, no row
    for cid in ("A", "B", "C", "D"):
        vec, freshness = vectors[cid]
        assert vec["as_of"] == date(2024, 3, 2) and freshness.vector_as_of == date(2024, 3, 2)
        want = next_morning.loc[cid]
        wrong = {f: (vec[f], want[f]) for f in kept if not _equal(vec[f], want[f])}
        assert not wrong, f"{cid}: {wrong}"
    # the cases the day was made for, by hand
    assert vectors["A"][0]["abandoned_carts_90d"] == next_morning.loc["A", "abandoned_carts_90d"]
    b = vectors["B"][0]
    assert b["orders_30d"] == 2 + 2 and b["spend_30d"] == pytest.approx(20.0 + 9.75 - 3.0)
    assert b["events_other_90d"] == 2 and b["days_since_bakery"] == 1.0
    # with 6 h: the cart of 01-31 20:00 (order 13 h later) and today's 03:00 (order 8 h later) are
    # abandoned; with 24 h neither (and today's is judged only after S+1)
    assert b["abandoned_carts_90d"] == (2 if cart_hours == 6 else 0)
    assert vectors["C"][0]["tenure_days"] == 1 and vectors["C"][0]["orders_total"] == 1
    assert vectors["D"][0]["days_since_last_event"] == 1.0 and vectors["D"][0]["recency_days"] == 457
    assert vectors["A"][1].events == 3 and vectors["B"][1].events == 5
    fresh.close()


def test_the_features_it_does_not_maintain_are_listed():
    fs = declare(FeatureConfig(windows_days=[30]), DatasetShape(
        categories=("dairy",), has_discount=True, has_events=True, has_contacts=True, has_responses=True,
        attributes=(("city", False),)))
    assert not_maintained(fs) == [
        "r_score", "f_score", "m_score", "rfm_segment", "ipi_std_days", "orders_trend", "spend_trend",
        "distinct_categories_365d", "spend_share_dairy", "discount_share_365d", "contacts_365d",
        "days_since_last_contact", "responses_365d", "response_rate_365d", "attr_city"]
    assert set(maintained(fs)) | set(not_maintained(fs)) == {f.name for f in fs.model_features}


def test_a_first_order_today_starts_the_counts_from_zero_and_leaves_the_rest_missing():
    fs = declare(FeatureConfig(windows_days=[30]), DatasetShape(categories=("dairy",), has_events=False))
    act = DayActivity()
    h = Horizon(S)
    act.add("purchase", h.start_us + 3_600_000_000, {"order_id": "x", "amount": 12.345678901, "category": "dairy"})
    vec = fresh_vector("Z", None, act, [], fs, h)
    assert vec["orders_total"] == 1 and vec["spend_30d"] == 12.345679 and vec["days_since_dairy"] == 1.0
    assert vec["r_score"] is None and vec["rfm_segment"] is None and vec["ipi_mean_days"] is None
    assert fresh_vector("Z", None, DayActivity(), [], fs, h) is None


def test_a_synthetic_day_replayed_as_events_matches_the_next_snapshot(tmp_path):
    """The same on a generated dataset: its busiest day of 2025 (purchase lines and events of every
    type) is taken out of the files and posted to the event log instead."""
    from typer.testing import CliRunner

    from cvm.cli import app

    raw = tmp_path / "raw"
    assert CliRunner().invoke(app, ["synth", "-n", "400", "-o", str(raw)]).exit_code == 0
    tables = {n: pd.read_parquet(raw / n) for n in ("transactions", "events", "contacts", "responses", "customers")}
    tables["products"] = pd.read_parquet(raw / "products.parquet")
    tx, ev = tables["transactions"], tables["events"]
    days = pd.concat([tx["timestamp"], ev["timestamp"]]).dt.normalize()
    day = days[days.dt.year == 2025].value_counts().sort_index().idxmax()
    s = day.date()
    on_day = lambda f: (f["timestamp"] >= day) & (f["timestamp"] < day + pd.Timedelta(days=1))
    posted = [{"event_id": f"t{i}", "customer_id": r.customer_id, "type": "purchase",
               "timestamp": r.timestamp.isoformat() + "Z",
               "properties": {"order_id": r.order_id, "amount": float(r.amount), "category": r.category}}
              for i, r in enumerate(tx[on_day(tx)].itertuples())]
    # a file's purchase event is the tracking side of an order: the posted purchases stand for both
    others = ev[on_day(ev) & (ev["event_type"] != "purchase")]
    posted += [{"event_id": f"e{i}", "customer_id": r.customer_id, "type": r.event_type,
                "timestamp": r.timestamp.isoformat() + "Z"} for i, r in enumerate(others.itertuples())]
    tables["transactions"], tables["events"] = tx[~on_day(tx)], ev[~on_day(ev)]
    root = write_dataset(tmp_path / "shop", tables, yaml_text="name: shop\ncategory_column: category\n")
    home = Home(tmp_path / "home")
    morning = _build(root, home, s, None)
    published = publish_snapshot(home, "shop", morning.path, s)
    log_path = home.events("shop", ensure=True) / "events.sqlite"
    log = EventLog(log_path)
    empty = IdentifierLookup(pd.DataFrame({"id_type": [], "value": [], "customer_id": []}))
    for i in range(0, len(posted), 100):
        ingest(posted[i:i + 100], log, empty, now=datetime.combine(s, datetime.max.time(), tzinfo=UTC))
    log.close()
    fresh = FreshVectors(home.online("shop"), EventLog(log_path), published.version, s)
    active = sorted({p["customer_id"] for p in posted})
    vectors = fresh.vectors(active)
    nxt = pd.read_parquet(_build(root, home, Horizon(s).as_of, None).path).set_index("customer_id")
    kept = maintained(morning.feature_set)
    compared = 0
    for cid in active:
        vec = vectors[cid][0]
        if vec is None:
            assert cid not in nxt.index
            continue
        wrong = {f: (vec[f], nxt.loc[cid, f]) for f in kept if not _equal(vec[f], nxt.loc[cid, f])}
        assert not wrong, f"{cid}: {wrong}"
        compared += 1
    buyers = {p["customer_id"] for p in posted if p["type"] == "purchase"}
    assert compared >= len(buyers) >= 5 and len(kept) >= 25
    fresh.close()
