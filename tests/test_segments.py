"""Segments: rules checked naming the segment and the field; and / or / not and missing values
evaluated as documented, the same for one customer as for a table; event counts from the sources
in honest time (nothing of the day of as_of); on Complete Journey, membership equal to plain
pandas on the package's raw tables; the nightly batch's membership, sizes and movement."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.config import FeatureConfig
from features.definitions import DatasetShape, declare
from scoring.segments.definitions import SEGMENTS, EventCount, SegmentError, parse_segments
from scoring.segments.evaluate import count_events, counts_needed, evaluate, evaluate_one, sizes

FS = declare(FeatureConfig(windows_days=[30, 90]), DatasetShape(categories=("dairy", "bakery"), has_events=True,
                                                                 attributes=(("city", False),)))
#: a dataset with transactions only (as Complete Journey): no events table
FS_NO_EVENTS = declare(FeatureConfig(windows_days=[30, 90]), DatasetShape(categories=("dairy",)))
AS_OF = date(2024, 3, 1)
T = pd.Timestamp


def _seg(where, name="s", **kw) -> dict:
    return {"segments": [{"name": name, "where": where, **kw}]}


def _ev(etype, days, op=">=", value=1, category=None) -> dict:
    spec = {"type": etype, "within_days": days, **({"category": category} if category else {})}
    return {"events": spec, "op": op, "value": value}


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("where, message", [
    ({"and": [{"feature": "monetary", "op": ">", "value": 1}, {"feature": "recencyy_days", "op": ">", "value": 3}]},
     r"^segment 's': where\.and\[1\]\.feature: unknown feature 'recencyy_days' \(known: recency_days, "),
    ({"feature": "monetary", "op": "~", "value": 1}, r"^segment 's': where\.op: Input should be '>'"),
    ({"feature": "monetary", "op": ">", "value": "a lot"}, r"where\.value: expected a number, got 'a lot'"),
    ({"feature": "monetary", "op": ">", "value": True}, r"where\.value: expected a number, got True"),
    ({"feature": "monetary", "op": ">"}, r"where\.value: missing: > compares with a value"),
    ({"feature": "rfm_segment", "op": ">", "value": "x"}, r"where\.value: rfm_segment is text"),
    ({"feature": "monetary", "op": "in", "value": ["a"]}, r"where\.value: monetary is a number: in needs a list of"),
    ({"feature": "rfm_segment", "op": "not_in", "value": []}, r"where\.value: not_in needs a non-empty list"),
    ({"feature": "monetary", "op": "is_null", "value": 3}, r"where\.value: is_null takes no value"),
    ({"feature": "monetary", "op": ">", "value": 1, "colour": "red"}, r"where\.colour: unknown field here"),
    ({"rfm_segment": ["champs"]}, r"where\.rfm_segment: unknown RFM segment 'champs' \(known: champions, loyal"),
    ({"score": "churn", "op": ">", "value": 0.5}, r"where\.score: Input should be 'churn_probability'"),
    ({"score": "clv", "op": "==", "value": "high"}, r"where\.value: expected a number"),
    ({"not": {"or": [_ev("view", 0)]}}, r"where\.not\.or\[0\]\.events\.within_days: Input should be greater than 0"),
    ({"not": _ev("View", 7)}, r"where\.not\.events\.type: String should match pattern"),
    ({"events": {"type": "view", "within_days": 7.5}, "op": ">=", "value": 1},
     r"where\.events\.within_days: Input should be a valid integer"),
    (_ev("view", 7, category="dairy"), r"where\.events\.category: only purchases have a category"),
    (_ev("purchase", 7, category="milk"),
     r"where\.events\.category: unknown category 'milk' \(the dataset's main categories: dairy, bakery\)"),
    (_ev("purchase", 7, op="is_null", value=None), r"where\.value: an event count is never missing"),
    ({"events": {"type": "view", "within_days": 7, "where": 1}, "op": ">=", "value": 1},
     r"where\.events\.where: unknown field here"),
    ({"or": []}, r"where\.or: List should have at least 1 item"),
    ({"colour": "red"}, r"^segment 's': where: expected one condition: a mapping with exactly one of feature"),
    ({"feature": "monetary", "score": "clv", "op": ">", "value": 1}, r"where: expected one condition"),
    ({"and": [{"or": [{"not": {"and": [{"feature": "recency", "op": ">", "value": 1}]}}]}]},
     r"where\.and\[0\]\.or\[0\]\.not\.and\[0\]\.feature: unknown feature 'recency'"),
])
def test_a_bad_rule_is_refused_naming_the_segment_and_the_field(where, message):
    with pytest.raises(SegmentError, match=message):
        parse_segments(_seg(where), FS)


def test_event_rules_follow_what_the_dataset_has():
    with pytest.raises(SegmentError, match=r"segment 's': where\.events\.type: the dataset has no events table: only "
                                           r"'purchase' events \(its orders\) can be counted, not 'view'"):
        parse_segments(_seg(_ev("view", 7)), FS_NO_EVENTS)
    parse_segments(_seg(_ev("purchase", 7, category="dairy")), FS_NO_EVENTS)  # purchases are its orders
    # a real-time segment reads the fresh vector: only the counts the feature set keeps
    with pytest.raises(SegmentError, match=r"segment 'rt': where\.and\[0\]\.events: a real-time segment can only "
                                           r"count what the fresh vector keeps \('view' over 90 days"):
        parse_segments(_seg({"and": [_ev("view", 7), {"rfm_segment": "lost"}]}, name="rt", realtime=True), FS)
    rt = parse_segments(_seg({"and": [_ev("view", 90), _ev("purchase", 30), _ev("purchase", 365)]}, name="rt",
                             realtime=True), FS)
    assert counts_needed(rt, FS.names) == []  # events_view_90d, orders_30d, frequency
    custom = parse_segments(_seg({"or": [_ev("view", 7), _ev("purchase", 30, category="dairy"), _ev("purchase", 90)]}),
                            FS)
    assert [c.key for c in counts_needed(custom, FS.names)] == ["events_view_7d", "orders_30d[dairy]"]


def test_file_level_errors_name_the_segment():
    ok = {"rfm_segment": ["lost"]}
    with pytest.raises(SegmentError, match=r"segment names must be unique: a defined twice"):
        parse_segments({"segments": [{"name": "a", "where": ok}] * 2}, FS)
    with pytest.raises(SegmentError, match=r"segment 'a': realtime: Input should be a valid boolean"):
        parse_segments(_seg(ok, name="a", realtime="yes"), FS)
    with pytest.raises(SegmentError, match=r"segment 'Big One': name: String should match pattern"):
        parse_segments(_seg(ok, name="Big One"), FS)
    with pytest.raises(SegmentError, match=r"segment 'a': owner: unknown field here"):
        parse_segments(_seg(ok, name="a", owner="crm"), FS)
    with pytest.raises(SegmentError, match=r"segments\[0\]: where: Field required"):
        parse_segments({"segments": [{"description": "no name, no rule"}]}, FS)
    with pytest.raises(SegmentError, match=r"^f\.yaml: segments: List should have at least 1 item"):
        parse_segments({"segments": []}, FS, "f.yaml")
    with pytest.raises(SegmentError, match=r"expected a mapping with one key, segments"):
        parse_segments(["big_lapsed"], FS)


def test_the_rfm_segment_names_are_the_eleven_of_the_feature_set():
    parse_segments(_seg({"rfm_segment": list(SEGMENTS)}), FS)
    assert len(SEGMENTS) == 11


def test_the_score_names_are_the_batch_and_service_columns():
    from batch.score import SCORE_COLUMNS
    from scoring.inference import SCORE_KEYS
    from scoring.segments.definitions import SCORES

    assert SCORES == SCORE_KEYS and set(SCORES) <= set(SCORE_COLUMNS)


# ------------------------------------------------------------------ evaluation by hand

FEATURES = pd.DataFrame({
    "customer_id": ["a", "b", "c", "d"],
    "as_of": [AS_OF] * 4,
    "monetary": [1500.0, 800.0, np.nan, 2000.0],
    "recency_days": [40, 50, 60, 10],
    "rfm_segment": ["at_risk", "lost", "lost", "champions"],
    "attr_city": ["Leeds", None, "York", "Hull"],
    "events_view_90d": [3, 0, 1, 0],
    "orders_30d": [0, 1, 0, 4],
})
SCORES_TABLE = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "churn_probability": [0.9, 0.2, np.nan, 0.1]})


def _members(defs, features=FEATURES, scores=SCORES_TABLE, counts=None) -> dict[str, list[str]]:
    got = evaluate(defs, features, scores, counts, as_of=AS_OF)
    return {s.name: got.loc[got["segment"] == s.name, "customer_id"].tolist() for s in defs}


def test_and_or_not_nested_by_hand():
    defs = parse_segments({"segments": [
        {"name": "big_lapsed", "where": {"and": [{"feature": "monetary", "op": ">", "value": 1000},
                                                 {"feature": "recency_days", "op": ">", "value": 30}]}},
        {"name": "browsers_or_lost", "where": {"or": [
            {"and": [_ev("view", 90), {"not": _ev("purchase", 30)}]},
            {"rfm_segment": ["lost"]}]}},
        # not(not(x)) is x; not(a or b) is (not a) and (not b)
        {"name": "double_not", "where": {"not": {"not": {"feature": "recency_days", "op": "<=", "value": 40}}}},
        {"name": "de_morgan", "where": {"not": {"or": [{"rfm_segment": "lost"},
                                                       {"feature": "monetary", "op": ">=", "value": 2000}]}}},
        {"name": "deep", "where": {"or": [{"and": [{"or": [{"feature": "attr_city", "op": "in", "value": ["York"]},
                                                           {"feature": "attr_city", "op": "==", "value": "Hull"}]},
                                                   {"not": {"score": "churn_probability", "op": ">", "value": 0.5}}]},
                                          {"and": [{"score": "churn_probability", "op": ">=", "value": 0.9},
                                                   {"feature": "attr_city", "op": "not_in", "value": ["York"]}]}]}},
    ]}, FS)
    assert _members(defs) == {"big_lapsed": ["a"], "browsers_or_lost": ["a", "b", "c"], "double_not": ["a", "d"],
                              "de_morgan": ["a"], "deep": ["a", "c", "d"]}
    for row in pd.concat([FEATURES, SCORES_TABLE.drop(columns="customer_id")], axis=1).to_dict("records"):
        assert evaluate_one(defs, row) == {s for s, ids in _members(defs).items() if row["customer_id"] in ids}


def test_a_comparison_with_a_missing_value_is_false_and_not_negates_it():
    """c's monetary and b's city are missing: every comparison on them is false (also != and not_in),
    not(...) of such a comparison is true, and is_null / not_null say what missing means."""
    rules = {
        "gt": {"feature": "monetary", "op": ">", "value": 1000},
        "le": {"feature": "monetary", "op": "<=", "value": 1000},
        "ne": {"feature": "monetary", "op": "!=", "value": 800},
        "not_gt": {"not": {"feature": "monetary", "op": ">", "value": 1000}},
        "null": {"feature": "monetary", "op": "is_null"},
        "not_null": {"feature": "monetary", "op": "not_null"},
        "city_ne": {"feature": "attr_city", "op": "!=", "value": "Leeds"},
        "city_not_in": {"feature": "attr_city", "op": "not_in", "value": ["Leeds"]},
        "not_city_in": {"not": {"feature": "attr_city", "op": "in", "value": ["Leeds"]}},
        "churn_low_or_unknown": {"or": [{"score": "churn_probability", "op": "<", "value": 0.5},
                                        {"score": "churn_probability", "op": "is_null"}]},
    }
    defs = parse_segments({"segments": [{"name": n, "where": w} for n, w in rules.items()]}, FS)
    assert _members(defs) == {
        "gt": ["a", "d"], "le": ["b"], "ne": ["a", "d"], "not_gt": ["b", "c"], "null": ["c"],
        "not_null": ["a", "b", "d"], "city_ne": ["c", "d"], "city_not_in": ["c", "d"], "not_city_in": ["b", "c", "d"],
        "churn_low_or_unknown": ["b", "c", "d"]}
    # without scores (no batch yet) a score comparison is false for everyone, is_null true
    assert _members(defs, scores=None)["churn_low_or_unknown"] == ["a", "b", "c", "d"]
    one = {"customer_id": "x", "monetary": None, "attr_city": None}  # one customer's vector, values missing
    assert evaluate_one(defs, one) == {"not_gt", "null", "not_city_in", "churn_low_or_unknown"}


EVENTS = pd.DataFrame([
    ("a", T("2024-03-01 00:00:00"), "view"),  # 00:00 of as_of: the future
    ("a", T("2024-02-29 23:59:59"), "view"),  # the last second before as_of: counts
    ("a", T("2024-02-23 00:00:00"), "view"),  # exactly as_of - 7 days: inside the 7-day window
    ("a", T("2024-02-22 23:59:59"), "view"),  # one second earlier: outside it, inside 30 days
    ("b", T("2024-02-25 12:00:00"), "add_to_cart"),
    ("b", T("2024-03-05 09:00:00"), "add_to_cart"),  # after as_of
    ("d", T("2024-02-28 09:00:00"), "add_to_cart"),
], columns=["customer_id", "timestamp", "event_type"])
LINES = pd.DataFrame([
    ("a", "o1", T("2024-02-20 10:00"), 5.0, "dairy"),  # an order of two lines counts once
    ("a", "o1", T("2024-02-20 10:00"), 3.0, "bakery"),
    ("a", "o2", T("2024-02-29 20:00"), -2.0, "dairy"),  # a return is an order too
    ("a", "o3", T("2024-03-01 00:00"), 9.0, "dairy"),  # 00:00 of as_of: not yet
    ("b", "o4", T("2024-01-31 23:59"), 4.0, "grocery"),  # first line before the 29-day window...
    ("b", "o4", T("2024-02-01 00:30"), 2.0, "dairy"),  # ...so the order is not in it, whatever its later line
    ("b", "o5", T("2024-02-01 00:00"), 6.0, "grocery"),  # exactly as_of - 29 days: inside
    ("d", "o6", T("2024-02-29 08:00"), 1.0, "bakery"),
], columns=["customer_id", "order_id", "timestamp", "amount", "category"])


def test_event_counts_are_honest_in_time_by_hand():
    wanted = [EventCount("view", 7), EventCount("view", 30), EventCount("view", 1), EventCount("add_to_cart", 7),
              EventCount("purchase", 29), EventCount("purchase", 29, "dairy"), EventCount("purchase", 7)]
    counts = count_events(wanted, AS_OF, events=EVENTS, transactions=LINES)
    got = counts.table.set_index("customer_id").to_dict("index")
    assert counts.as_of == AS_OF
    assert got == {
        "a": {"events_view_7d": 2, "events_view_30d": 3, "events_view_1d": 1, "events_add_to_cart_7d": 0,
              "orders_29d": 2, "orders_29d[dairy]": 2, "orders_7d": 1},
        "b": {"events_view_7d": 0, "events_view_30d": 0, "events_view_1d": 0, "events_add_to_cart_7d": 1,
              "orders_29d": 1, "orders_29d[dairy]": 0, "orders_7d": 0},
        "d": {"events_view_7d": 0, "events_view_30d": 0, "events_view_1d": 0, "events_add_to_cart_7d": 1,
              "orders_29d": 1, "orders_29d[dairy]": 0, "orders_7d": 1},
    }
    with pytest.raises(ValueError, match="no events table"):
        count_events([EventCount("view", 7)], AS_OF, events=None, transactions=LINES)


def test_membership_with_event_counts_by_hand():
    defs = parse_segments({"segments": [
        {"name": "cart_no_buy_7d", "where": {"and": [_ev("add_to_cart", 7), {"not": _ev("purchase", 7)}]}},
        {"name": "quiet_week", "where": _ev("purchase", 7, "==", 0)},
        {"name": "dairy_twice", "where": _ev("purchase", 29, ">=", 2, category="dairy")},
        {"name": "viewers", "where": {"and": [_ev("view", 90), _ev("purchase", 30, "<", 1)]}},  # kept by the features
    ]}, FS)
    needed = counts_needed(defs, FEATURES.columns)
    assert [c.key for c in needed] == ["events_add_to_cart_7d", "orders_7d", "orders_29d[dairy]"]
    counts = count_events(needed, AS_OF, events=EVENTS, transactions=LINES)
    # c has no events and no orders: counts of 0, not missing
    assert _members(defs, counts=counts) == {"cart_no_buy_7d": ["b"], "quiet_week": ["b", "c"],
                                             "dairy_twice": ["a"], "viewers": ["a", "c"]}
    # one customer's vector: the counts under their keys, or the features that keep them
    assert evaluate_one(defs, {"customer_id": "b", "events_add_to_cart_7d": 1, "orders_7d": 0, "orders_29d[dairy]": 0,
                               "events_view_90d": 0, "orders_30d": 1}) == {"cart_no_buy_7d", "quiet_week"}
    year = parse_segments(_seg(_ev("purchase", 365, ">=", 5), name="year"), FS)
    assert evaluate_one(year, {"customer_id": "x", "frequency": 5}) == {"year"}  # frequency: the RFM window's orders
    with pytest.raises(ValueError, match=r"no count of add_to_cart events in 7 d"):
        evaluate_one(defs, {"customer_id": "x"})
    with pytest.raises(ValueError, match=r"event counts not given: add_to_cart events in 7 d"):
        evaluate(defs, FEATURES, None, None, as_of=AS_OF)
    with pytest.raises(ValueError, match=r"the event counts are as of 2024-02-01, not 2024-03-01"):
        evaluate(defs, FEATURES, None, count_events(needed, date(2024, 2, 1), events=EVENTS, transactions=LINES),
                 as_of=AS_OF)
    with pytest.raises(ValueError, match=r"the feature table is as of 2024-03-01, not 2024-03-02"):
        evaluate(defs, FEATURES, None, counts, as_of=date(2024, 3, 2))


def test_sizes_entries_and_exits_by_hand(tmp_path):
    from base.dates import partition_dir
    from batch.segments_job import MEMBERS_FILE, SIZES_FILE, segment_sizes

    defs = parse_segments(_seg({"rfm_segment": ["lost"]}, name="lost_ones"), FS)
    before = pd.DataFrame({"customer_id": ["a", "b"], "segment": "lost_ones"})
    now = pd.DataFrame({"customer_id": ["b", "c", "d"], "segment": "lost_ones"})
    row = sizes(defs, now, 10, before).iloc[0]
    assert (row["size"], row["share"], row["entries"], row["exits"], row["previous_size"]) == (3, 0.3, 2, 1, 2)
    assert pd.isna(sizes(defs, now, 10, None).iloc[0]["entries"])  # no earlier date: no movement
    # against the previous date with segments in the same root; a changed rule has no movement
    prev = partition_dir(tmp_path, date(2024, 2, 1))
    prev.mkdir()
    before.to_parquet(prev / MEMBERS_FILE)
    pd.DataFrame({"segment": ["lost_ones"], "rule": ["rfm_segment in [lost]"]}).to_parquet(prev / SIZES_FILE)
    table, day = segment_sizes(defs, now, 10, tmp_path, AS_OF)
    assert day == date(2024, 2, 1) and table.iloc[0][["entries", "exits"]].tolist() == [2, 1]
    changed = parse_segments(_seg({"rfm_segment": ["lost", "hibernating"]}, name="lost_ones"), FS)
    table, _ = segment_sizes(changed, now, 10, tmp_path, AS_OF)
    assert table.iloc[0]["size"] == 3 and table.iloc[0][["entries", "exits", "previous_size"]].isna().all()


# ------------------------------------------------------------------ the sources behind a snapshot


def test_counts_from_the_sources_equal_the_features_that_keep_them(home, tiny_dataset):
    """The same count read from the snapshot and counted from the source tables (validated, with
    the event log's rows appended) agree: one definition of a window."""
    from base.engines import open_engine
    from batch.segments_job import load_event_counts
    from features.pipeline import build_snapshot
    from sources.dataset import resolve_dataset

    ds = resolve_dataset(str(tiny_dataset), home)
    with open_engine("duckdb") as engine:
        built = build_snapshot(ds, AS_OF, engine, home)
    snap = pd.read_parquet(built.path).set_index("customer_id")
    kept = {EventCount("view", 90): "events_view_90d", EventCount("add_to_cart", 90): "events_add_to_cart_90d",
            EventCount("purchase", 30): "orders_30d", EventCount("purchase", 365): "frequency"}
    counts = load_event_counts(ds, AS_OF, home, list(kept), None).table.set_index("customer_id")
    counts = counts.reindex(snap.index, fill_value=0)
    for count, column in kept.items():
        assert counts[count.key].tolist() == snap[column].tolist(), column
    assert snap.loc["A", "events_view_90d"] == 1  # the view at 00:00 of as_of is not counted


# ------------------------------------------------------------------ Complete Journey

CJ_AS_OF = date(2017, 11, 1)


@pytest.fixture(scope="module")
def cj(tmp_path_factory):
    """A home of its own; its feature snapshot is built by the first `cvm segments` command."""
    from sources.completejourney import package_data_dir

    raw = package_data_dir()
    tx = pd.read_parquet(raw / "transactions.parquet").drop_duplicates()
    tx = tx[tx["transaction_timestamp"] < pd.Timestamp(CJ_AS_OF)]  # honest time: nothing of as_of
    products = pd.read_parquet(raw / "products.parquet", columns=["product_id", "department"])
    return tmp_path_factory.mktemp("cj-segments") / "home", tx.merge(products, on="product_id", how="left")


def _cli(*args):
    from cvm.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _export(cj, name, tmp_path, suffix=".parquet") -> pd.DataFrame:
    from scoring.segments.definitions import SHIPPED

    home, _ = cj
    out = tmp_path / f"{name}{suffix}"
    r = _cli("segments", "export", name, "--as-of", CJ_AS_OF, "--out", out, "--home", home,
             "--segments", SHIPPED / "completejourney.yaml")
    assert r.exit_code == 0, r.output
    return pd.read_csv(out, dtype={"customer_id": str}) if suffix == ".csv" else pd.read_parquet(out)


def test_complete_journey_big_lapsed_equals_plain_pandas_on_the_raw_data(cj, tmp_path):
    """monetary > 1,000 and recency_days > 30 as of 2017-11-01: monetary = spend of the 365 days
    before as_of, recency = days since the last purchase date, from the package's raw transactions."""
    _, tx = cj
    year = tx[tx["transaction_timestamp"] >= pd.Timestamp(CJ_AS_OF - timedelta(days=365))]
    monetary = year.groupby("household_id")["sales_value"].sum()
    recency = (pd.Timestamp(CJ_AS_OF) - tx.groupby("household_id")["transaction_timestamp"].max().dt.normalize()).dt.days
    want = {str(h) for h in monetary.index if monetary[h] > 1000 and recency[h] > 30}
    rows = _export(cj, "big_lapsed", tmp_path, ".csv")
    assert len(want) >= 10 and set(rows["customer_id"]) == want and len(rows) == len(want)
    assert {"rfm_segment", "recency_days", "monetary", "segment", "as_of"} <= set(rows.columns)
    assert (rows["monetary"] > 1000).all() and (rows["recency_days"] > 30).all()


def test_complete_journey_purchase_counts_of_a_window_and_a_department_equal_pandas(cj, tmp_path):
    """No events table: purchases are the baskets. meat_regulars = at least 3 baskets with a MEAT line
    in the 28 days before as_of; weekly_shopper_gone_quiet = 12+ baskets in 90 days, none in 14."""
    _, tx = cj
    first = tx.groupby("basket_id")["transaction_timestamp"].transform("min")
    cut = pd.Timestamp(CJ_AS_OF)

    def baskets(days, lines=tx):
        keep = first.loc[lines.index] >= cut - pd.Timedelta(days=days)
        return lines[keep].groupby("household_id")["basket_id"].nunique()

    meat = baskets(28, tx[tx["department"] == "MEAT"])
    want_meat = {str(h) for h, n in meat.items() if n >= 3}
    b90, b14 = baskets(90), baskets(14)
    want_quiet = {str(h) for h, n in b90.items() if n >= 12 and b14.get(h, 0) == 0}
    assert len(want_meat) >= 50 and len(want_quiet) >= 10
    assert set(_export(cj, "meat_regulars", tmp_path)["customer_id"]) == want_meat
    assert set(_export(cj, "weekly_shopper_gone_quiet", tmp_path)["customer_id"]) == want_quiet


def test_complete_journey_list_preview_and_errors(cj, tmp_path):
    from scoring.segments.definitions import SHIPPED

    home, tx = cj
    r = _cli("segments", "list", "--home", home)  # the shipped file of the built-in dataset
    assert r.exit_code == 0, r.output
    for name in ("big_lapsed", "meat_regulars", "produce_lapsers"):
        assert name in r.output
    r = _cli("segments", "preview", "big_lapsed", "--as-of", CJ_AS_OF, "--home", home)
    text = " ".join(r.output.split())
    n = len(_export(cj, "big_lapsed", tmp_path))
    assert r.exit_code == 0 and f"{n:,} of {tx['household_id'].nunique():,} customers" in text, r.output
    assert "RFM mix:" in text and "rule: monetary > 1000 and recency_days > 30" in text
    assert "no batch scores" not in text  # the rule reads no score
    r = _cli("segments", "preview", "slipping_loyal", "--as-of", CJ_AS_OF, "--home", home)
    assert r.exit_code == 0 and "no batch scores as of 2017-11-01: its score conditions are false" in r.output
    assert "0 of 2,452 customers" in " ".join(r.output.split())
    r = _cli("segments", "preview", "nope", "--as-of", CJ_AS_OF, "--home", home)
    assert r.exit_code == 2 and "no segment 'nope'" in r.output and "big_lapsed" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments:\n  - name: x\n    where: {events: {type: view, within_days: 7}, op: '>', value: 0}\n")
    r = _cli("segments", "preview", "x", "--as-of", CJ_AS_OF, "--home", home, "--segments", bad)
    assert r.exit_code == 2 and "segment 'x': where.events.type: the dataset has no events table" in r.output
    r = _cli("segments", "export", "big_lapsed", "--as-of", CJ_AS_OF, "--home", home, "--out", tmp_path / "x.xlsx",
             "--segments", SHIPPED / "completejourney.yaml")
    assert r.exit_code == 2 and "give a .csv or .parquet file" in r.output


# ------------------------------------------------------------------ the nightly batch


def test_the_nightly_batch_writes_membership_sizes_and_movement(served_home, tmp_path, monkeypatch):
    """`cvm score-batch --segments` on the synthetic home at two dates: membership equals the rules
    computed here with pandas on each snapshot (and on the counts from the sources for windows the
    snapshot does not keep), entries and exits are the set differences, everything is in the
    manifest; a bad segment file stops the run before anything is written."""
    import json

    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from base.home import Home
    from batch.segments_job import load_event_counts
    from scoring.segments.definitions import SHIPPED
    from sources.dataset import resolve_dataset
    from tests.serving_fixtures import AS_OF

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rules, out = SHIPPED / "synthetic.yaml", tmp_path / "out"
    common = ["--dataset", served_home.dataset, "--home", served_home.home, "--out", out, "--catalog",
              served_home.catalog, "--no-publish"]
    days = [(date.fromisoformat(AS_OF) - timedelta(days=14)).isoformat(), AS_OF]  # before AS_OF: it stays the latest
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments:\n  - name: oops\n    where: {feature: monetaryy, op: '>', value: 1}\n")
    r = _cli("score-batch", "--as-of", AS_OF, *common, "--segments", bad)
    assert r.exit_code == 2 and "segment 'oops': where.feature: unknown feature 'monetaryy'" in r.output, r.output
    assert not out.exists() or not list(out.iterdir())

    home, ds = Home(served_home.home), resolve_dataset(str(served_home.dataset), Home(served_home.home))
    members = {}
    for day in days:
        r = _cli("score-batch", "--as-of", day, *common, "--segments", rules)
        assert r.exit_code == 0, r.output
        final = out / f"as_of={day}"
        snap = pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={day}")
        snap["customer_id"] = snap["customer_id"].astype(str)
        counts = load_event_counts(ds, date.fromisoformat(day), home, [
            EventCount("add_to_cart", 7), EventCount("purchase", 7), EventCount("view", 14),
            EventCount("support_ticket", 30), EventCount("purchase", 60)], None).table
        c = snap[["customer_id"]].merge(counts, on="customer_id", how="left").fillna(0)
        want = {
            "cart_no_buy": (snap["events_add_to_cart_90d"] >= 1) & ~(snap["orders_30d"] >= 1),
            "cart_no_buy_7d": (c["events_add_to_cart_7d"] >= 1) & ~(c["orders_7d"] >= 1),
            "big_lapsed": (snap["monetary"] > 1000) & (snap["recency_days"] > 30),
            "at_risk_engaged": snap["rfm_segment"].isin(["at_risk", "cannot_lose"]) & (snap["events_email_open_90d"] >= 1),
            "browsing_without_orders": ((c["events_view_14d"] >= 5) | (c["events_support_ticket_30d"] >= 1))
            & (c["orders_60d"] == 0),
        }
        got = pd.read_parquet(final / "segments.parquet")
        assert list(got.columns) == ["customer_id", "segment"]
        members[day] = {name: set(got.loc[got["segment"] == name, "customer_id"]) for name in want}
        assert members[day] == {name: set(snap.loc[mask.to_numpy(), "customer_id"]) for name, mask in want.items()}
        manifest = json.loads((final / "manifest.json").read_text())
        assert manifest["segments"]["previous_as_of"] == (None if day == days[0] else days[0])
        assert manifest["files"]["segments.parquet"]["rows"] == len(got)
        assert manifest["segments"]["counted_from_sources"] == ["events_add_to_cart_7d", "orders_7d",
                                                                "events_view_14d", "events_support_ticket_30d",
                                                                "orders_60d"]
        assert "segments:" in r.output
    assert any(len(m) for m in members[AS_OF].values()) and any(len(m) for m in members[days[0]].values())
    assert any(members[d]["cart_no_buy_7d"] | members[d]["browsing_without_orders"] for d in days)  # counted ones
    sizes_now = pd.read_parquet(out / f"as_of={AS_OF}" / "segment_sizes.parquet").set_index("segment")
    n = len(pd.read_parquet(out / f"as_of={AS_OF}" / "scores.parquet"))
    for name, now in members[AS_OF].items():
        was = members[days[0]][name]
        row = sizes_now.loc[name]
        assert (row["size"], row["entries"], row["exits"], row["previous_size"]) == (
            len(now), len(now - was), len(was - now), len(was)), name
        assert row["share"] == pytest.approx(len(now) / n)
    # preview and export read the batch's scores of that date
    home_args = ["--dataset", served_home.dataset, "--home", served_home.home, "--segments", rules, "--batch-root", out]
    target = max(members[AS_OF], key=lambda k: len(members[AS_OF][k]))
    r = _cli("segments", "export", target, "--as-of", AS_OF, "--out", tmp_path / "e.parquet", *home_args)
    assert r.exit_code == 0, r.output
    rows = pd.read_parquet(tmp_path / "e.parquet")
    assert set(rows["customer_id"]) == members[AS_OF][target] and rows["churn_probability"].notna().all()


# ------------------------------------------------------------------ the report


def test_the_report_section_shows_the_latest_sizes_and_movement_or_says_why_not(tmp_path):
    import json

    import plotly.graph_objects as go

    from base.dates import partition_dir
    from report.html import _Figures
    from report.segments import load_sizes, section_html

    empty = section_html(None, _Figures().div, go)
    assert "No batch output with segments up to this date" in empty and "cvm segments list" in empty
    with_sizes, later = partition_dir(tmp_path, date(2017, 11, 1)), partition_dir(tmp_path, date(2017, 11, 8))
    for d in (with_sizes, later):
        d.mkdir()
    pd.DataFrame({"segment": ["big_lapsed"], "rule": ["monetary > 1000"], "size": [29], "share": [29 / 2452],
                  "entries": pd.array([7], "Int64"), "exits": pd.array([3], "Int64"),
                  "previous_size": pd.array([25], "Int64")}).to_parquet(with_sizes / "segment_sizes.parquet")
    (with_sizes / "manifest.json").write_text(json.dumps({"segments": {"previous_as_of": "2017-10-04",
                                                                       "file": "x.yaml"}}))
    assert load_sizes(partition_dir(tmp_path, date(2017, 10, 30))) is None  # nothing up to that date
    data = load_sizes(later)  # the report's date has no segments: the latest before it
    assert data is not None and data.as_of == date(2017, 11, 1)
    page = section_html(data, _Figures().div, go, as_of=date(2017, 11, 8))
    assert "From the batch of 2017-11-01 (the latest with segments; the report is as of 2017-11-08)" in page
    assert "against the batch of 2017-10-04" in page
    assert "<td>big_lapsed</td><td>29</td><td>1.2%</td><td>7</td><td>3</td><td>25</td>" in page
    assert "left since 2017-10-04" in page  # the exits are drawn


@pytest.mark.spark
def test_the_spark_batch_writes_the_same_segments_inside_its_staging(served_home, tmp_path, monkeypatch):
    """On Spark the scores are a directory of parts: the segments are evaluated on them before the
    swap and recorded in the manifest the run returns, as on DuckDB."""
    import json
    import shutil

    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from scoring.segments.definitions import SHIPPED
    from tests.serving_fixtures import AS_OF

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    shutil.copytree(served_home.home, home)  # its decision log is the copy's
    out = tmp_path / "out"
    r = _cli("score-batch", "--as-of", AS_OF, "--dataset", served_home.dataset, "--home", home, "--out", out,
             "--catalog", served_home.catalog, "--no-publish", "--engine", "spark", "--spark-master", "local[2]",
             "--segments", SHIPPED / "synthetic.yaml")
    assert r.exit_code == 0, r.output
    final = out / f"as_of={AS_OF}"
    assert (final / "scores.parquet").is_dir()  # Spark's parts
    snap = pd.read_parquet(home / "features" / served_home.name / f"as_of={AS_OF}")
    want = set(snap.loc[(snap["monetary"] > 1000) & (snap["recency_days"] > 30), "customer_id"].astype(str))
    got = pd.read_parquet(final / "segments.parquet")
    assert set(got.loc[got["segment"] == "big_lapsed", "customer_id"]) == want
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["files"]["segment_sizes.parquet"]["rows"] == 5 and manifest["segments"]["customers"] == len(snap)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left
