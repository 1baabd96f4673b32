"""Segments: rules checked naming the segment and the field, evaluated as documented (and, or, not,
missing values), the same for one customer as for a table, and on Complete Journey equal to a
plain pandas computation from the package's raw transactions."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.definitions import DatasetShape, declare
from scoring.segments.definitions import SegmentError, parse_segments
from scoring.segments.evaluate import evaluate_one, membership, sizes

FS = declare(FeatureConfig(windows_days=[30, 90]), DatasetShape(categories=("dairy",), has_events=True))


def _seg(where, name="s", **kw) -> dict:
    return {"segments": [{"name": name, "where": where, **kw}]}


@pytest.mark.parametrize("where, message", [
    ({"and": [{"feature": "monetary", "op": ">", "value": 1}, {"feature": "recencyy_days", "op": ">", "value": 3}]},
     r"segment 's': where.and\[1\].feature: unknown feature 'recencyy_days'"),
    ({"feature": "monetary", "op": "~", "value": 1}, r"where.op: expected one of"),
    ({"feature": "monetary", "op": ">", "value": "a lot"}, r"where.value: expected a number"),
    ({"feature": "rfm_segment", "op": ">", "value": "x"}, r"where.value: rfm_segment is text"),
    ({"rfm_segment": ["champs"]}, r"where.rfm_segment: unknown RFM segment 'champs'"),
    ({"score": "churn", "op": ">", "value": 0.5}, r"where.score: unknown score 'churn'"),
    ({"not": {"events": {"type": "view", "within_days": 7}, "op": ">=", "value": 1}},
     r"where.not.events.within_days: no count of 'view' events over 7 days in this feature set \(windows: 90\)"),
    ({"events": {"type": "purchase", "within_days": 30, "category": "dairy"}, "op": ">", "value": 0},
     r"where.events.category: unknown field"),
    ({"or": []}, r"where.or: expected a non-empty list"),
    ({"feature": "monetary", "op": "is_null", "value": 3}, r"where.value: is_null takes no value"),
    ({"colour": "red"}, r"where: unknown condition \['colour'\]"),
])
def test_a_bad_rule_is_refused_naming_the_segment_and_the_field(where, message):
    with pytest.raises(SegmentError, match=message):
        parse_segments(_seg(where), FS)


def test_file_level_errors():
    with pytest.raises(SegmentError, match=r"segment 'a': name: defined twice"):
        parse_segments({"segments": [{"name": "a", "where": {"rfm_segment": ["lost"]}}] * 2}, FS)
    with pytest.raises(SegmentError, match=r"segment 'a': realtime: expected true or false"):
        parse_segments(_seg({"rfm_segment": ["lost"]}, name="a", realtime="yes"), FS)
    with pytest.raises(SegmentError, match=r"segment 'Big One': name: lower-case"):
        parse_segments(_seg({"rfm_segment": ["lost"]}, name="Big One"), FS)


TABLE = pd.DataFrame({
    "customer_id": ["a", "b", "c", "d"],
    "monetary": [1500.0, 800.0, np.nan, 2000.0],
    "recency_days": [40, 50, 60, 10],
    "rfm_segment": ["at_risk", "lost", "lost", "champions"],
    "events_view_90d": [3, 0, 1, 0],
    "orders_30d": [0, 1, 0, 4],
    "churn_probability": [0.9, 0.2, np.nan, 0.1],
})


def test_and_or_not_and_missing_values_by_hand():
    defs = parse_segments({"segments": [
        {"name": "big_lapsed", "where": {"and": [{"feature": "monetary", "op": ">", "value": 1000},
                                                 {"feature": "recency_days", "op": ">", "value": 30}]}},
        # c's monetary is missing: the comparison is false, so not(...) is true for c
        {"name": "not_big", "where": {"not": {"feature": "monetary", "op": ">", "value": 1000}}},
        {"name": "unknown_spend", "where": {"feature": "monetary", "op": "is_null"}},
        {"name": "browsers_or_lost", "where": {"or": [
            {"and": [{"events": {"type": "view", "within_days": 90}, "op": ">=", "value": 1},
                     {"not": {"events": {"type": "purchase", "within_days": 30}, "op": ">=", "value": 1}}]},
            {"rfm_segment": ["lost"]}]}},
        {"name": "risky", "where": {"score": "churn_probability", "op": ">=", "value": 0.5}},
    ]}, FS)
    got = membership(defs, TABLE).groupby("segment")["customer_id"].apply(list).to_dict()
    assert got == {"big_lapsed": ["a"], "not_big": ["b", "c"], "unknown_spend": ["c"],
                   "browsers_or_lost": ["a", "b", "c"], "risky": ["a"]}
    for row in TABLE.to_dict("records"):  # one customer at a time: the same answers
        assert evaluate_one(defs, row) == {s for s, ids in got.items() if row["customer_id"] in ids}


def test_sizes_entries_and_exits_by_hand():
    defs = parse_segments(_seg({"rfm_segment": ["lost"]}, name="lost_ones"), FS)
    before = pd.DataFrame({"customer_id": ["a", "b"], "segment": "lost_ones"})
    now = pd.DataFrame({"customer_id": ["b", "c", "d"], "segment": "lost_ones"})
    row = sizes(defs, now, 10, before).iloc[0]
    assert (row["size"], row["share"], row["entries"], row["exits"], row["previous_size"]) == (3, 0.3, 2, 1, 2)
    assert pd.isna(sizes(defs, now, 10, None).iloc[0]["entries"])  # no earlier date: no movement


def test_complete_journey_membership_equals_plain_pandas_on_the_raw_data(tmp_path):
    """Every household with monetary > 1,000 and recency_days > 30 as of 2017-11-01, computed
    here from the package's raw transactions with pandas, independently of the feature builder."""
    from base.engines import open_engine
    from base.home import Home
    from features.pipeline import build_snapshot
    from sources.completejourney import package_data_dir
    from sources.dataset import resolve_dataset

    as_of = date(2017, 11, 1)
    home = Home(tmp_path / "home")
    with open_engine("duckdb") as engine:
        built = build_snapshot(resolve_dataset("completejourney", home), as_of, engine, home)
    snapshot = pd.read_parquet(built.path)
    defs = parse_segments(_seg({"and": [{"feature": "monetary", "op": ">", "value": 1000},
                                        {"feature": "recency_days", "op": ">", "value": 30}]},
                               name="big_lapsed"), built.feature_set)
    got = set(membership(defs, snapshot)["customer_id"])

    raw = pd.read_parquet(package_data_dir() / "transactions.parquet").drop_duplicates()
    raw = raw[raw["transaction_timestamp"] < pd.Timestamp(as_of)]
    year = raw[raw["transaction_timestamp"] >= pd.Timestamp(as_of - timedelta(days=365))]
    monetary = year.groupby("household_id")["sales_value"].sum()
    last = raw.groupby("household_id")["transaction_timestamp"].max().dt.normalize()
    recency = (pd.Timestamp(as_of) - last).dt.days
    want = {str(h) for h in monetary.index if monetary[h] > 1000 and recency.get(h, 0) > 30}
    assert len(want) >= 10 and got == want


def test_the_nightly_batch_writes_membership_sizes_and_movement_and_the_cli_exports(served_home, tmp_path,
                                                                                   monkeypatch):
    """`cvm score-batch --segments` on the synthetic home at two dates: the membership equals the
    rules computed here with pandas on each snapshot, entries and exits are the set differences;
    `cvm segments preview|export` give the same members."""
    import json

    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from typer.testing import CliRunner

    from cvm.cli import app
    from scoring.segments.definitions import SHIPPED
    from tests.serving_fixtures import AS_OF

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rules = SHIPPED / "synthetic.yaml"
    out = tmp_path / "out"
    days = [(date.fromisoformat(AS_OF) - timedelta(days=14)).isoformat(), AS_OF]  # before AS_OF: it stays the latest
    members = {}
    for day in days:
        r = CliRunner().invoke(app, ["score-batch", "--as-of", day, "--dataset", str(served_home.dataset), "--home",
                                     str(served_home.home), "--out", str(out), "--catalog", str(served_home.catalog),
                                     "--no-publish", "--segments", str(rules)])
        assert r.exit_code == 0, r.output
        final = out / f"as_of={day}"
        snap = pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={day}")
        want = {
            "cart_no_buy": snap[(snap["events_add_to_cart_90d"] >= 1) & ~(snap["orders_30d"] >= 1)],
            "big_lapsed": snap[(snap["monetary"] > 1000) & (snap["recency_days"] > 30)],
            "at_risk_engaged": snap[snap["rfm_segment"].isin(["at_risk", "cannot_lose"])
                                    & (snap["events_email_open_90d"] >= 1)],
        }
        got = pd.read_parquet(final / "segments.parquet")
        members[day] = {name: set(got.loc[got["segment"] == name, "customer_id"]) for name in want}
        assert members[day] == {name: set(frame["customer_id"].astype(str)) for name, frame in want.items()}
        manifest = json.loads((final / "manifest.json").read_text())
        assert manifest["segments"]["previous_as_of"] == (None if day == days[0] else days[0])
    sizes_now = pd.read_parquet(out / f"as_of={AS_OF}" / "segment_sizes.parquet").set_index("segment")
    assert any(len(m) for m in members[AS_OF].values())
    for name, now in members[AS_OF].items():
        was = members[days[0]][name]
        assert (sizes_now.loc[name, "size"], sizes_now.loc[name, "entries"], sizes_now.loc[name, "exits"]) == (
            len(now), len(now - was), len(was - now))

    home = ["--dataset", str(served_home.dataset), "--home", str(served_home.home), "--segments", str(rules)]
    r = CliRunner().invoke(app, ["segments", "list", *home])
    assert r.exit_code == 0 and "cart_no_buy" in r.output and "at_risk_engaged" in r.output, r.output
    target = max(members[AS_OF], key=lambda n: len(members[AS_OF][n]))
    r = CliRunner().invoke(app, ["segments", "preview", target, "--as-of", AS_OF, *home])
    assert r.exit_code == 0 and f"{len(members[AS_OF][target]):,} of" in " ".join(r.output.split()), r.output
    for suffix in (".csv", ".parquet"):
        file = tmp_path / f"export{suffix}"
        r = CliRunner().invoke(app, ["segments", "export", target, "--as-of", AS_OF, "--out", str(file),
                                     "--batch-root", str(out), *home])
        assert r.exit_code == 0, r.output
        rows = pd.read_csv(file, dtype={"customer_id": str}) if suffix == ".csv" else pd.read_parquet(file)
        assert set(rows["customer_id"]) == members[AS_OF][target] and "churn_probability" in rows.columns
    r = CliRunner().invoke(app, ["segments", "preview", "nope", "--as-of", AS_OF, *home])
    assert r.exit_code == 2 and "no segment 'nope'" in r.output


def test_the_report_section_shows_sizes_and_movement_or_says_why_not():
    import plotly.graph_objects as go

    from report.html import _Figures
    from report.segments import section_html

    empty = section_html(None, {}, _Figures().div, go)
    assert "no segments in this batch output" in empty and "cvm segments list" in empty
    table = pd.DataFrame({"segment": ["big_lapsed"], "size": [29], "share": [29 / 2452], "entries": pd.array([7], "Int64"),
                          "exits": pd.array([3], "Int64"), "previous_size": pd.array([25], "Int64")})
    page = section_html(table, {"segments": {"previous_as_of": "2017-10-04", "file": "x.yaml"}}, _Figures().div, go)
    assert "against the batch of 2017-10-04" in page and "<td>big_lapsed</td><td>29</td><td>1.2%</td><td>7</td>" in page
    assert "left since 2017-10-04" in page  # the exits are drawn
