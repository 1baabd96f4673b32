"""Offer catalog validation and next-best-offer arbitration on hand-built tables."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from scoring.catalog import CatalogError, default_catalog_path, load_catalog, parse_catalog
from scoring.contacts import ContactHistory, ContactState
from scoring.nbo import CategorySpend, CustomerScores, arbitrate, top_offers

CJ_CATEGORIES = ['GROCERY', 'DRUG GM', 'PRODUCE', 'COSMETICS', 'NUTRITION', 'MEAT', 'MEAT-PCKGD', 'DELI']


def base() -> dict:
    return {
        "channels": ["email", "app"],
        "contact_policy": {"caps": [{"max_contacts": 2, "window_days": 30}]},
        "offers": [
            {"id": "xs-a", "name": "A", "type": "cross_sell", "target_category": "A", "cost": 1.0,
             "value": {"model": "category_spend", "margin": 0.5}, "channels": ["email", "app"],
             "cooldown_days": 10, "campaign_ids": ["C1"]},
            {"id": "ret", "name": "R", "type": "retention", "cost": 2.0, "lever": 2.0,
             "value": {"model": "clv_share", "rate": 0.1}, "channels": ["email"],
             "eligibility": {"score_ranges": {"churn_probability": {"min": 0.3}}}},
            {"id": "up", "name": "U", "type": "upsell", "cost": 0.5,
             "value": {"model": "basket_uplift", "rate": 0.2, "margin": 0.5}, "channels": ["app"],
             "eligibility": {"segments": ["champions"]}},
        ],
    }


def test_the_shipped_complete_journey_catalog_is_valid():
    cat = load_catalog(default_catalog_path("completejourney"), CJ_CATEGORIES)
    assert {o.type for o in cat.offers} == {"cross_sell", "retention", "upsell", "loyalty"}
    assert {o.target_category for o in cat.offers if o.type == "cross_sell"} <= set(CJ_CATEGORIES)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["offers"][0].update(colour="red"), "offers[0] (xs-a).colour: Extra inputs are not permitted"),
    (lambda d: d["offers"][1].update(cost=-1), "offers[1] (ret).cost: Input should be greater than or equal to 0"),
    (lambda d: d["offers"][1]["value"].update(rate=3), "offers[1] (ret).value.rate"),
    (lambda d: d["offers"][0].update(type="coupon"), "offers[0] (xs-a).type"),
    (lambda d: d["offers"][0].pop("target_category"), "a cross_sell offer needs target_category"),
    (lambda d: d["offers"][2]["eligibility"].update(segments=["vips"]), "unknown segment(s) ['vips']"),
    (lambda d: d["offers"][1]["eligibility"]["score_ranges"].update(iq={"min": 1}), "unknown score(s) ['iq']"),
    (lambda d: d["offers"][1]["eligibility"]["score_ranges"].update(clv={"min": 5, "max": 1}), "above max"),
    (lambda d: d["offers"][2].update(channels=["fax"]), "unknown channel(s) ['fax']"),
    (lambda d: d["offers"].append(dict(d["offers"][0])), "duplicate offer id(s) ['xs-a']"),
    (lambda d: d["offers"][1]["value"].update(model="category_spend"), "needs target_category"),
    (lambda d: d.update(offers=[]), "offers"),
])
def test_bad_catalogs_are_rejected_with_the_offer_and_field(mutate, message):
    d = base()
    mutate(d)
    with pytest.raises(CatalogError) as exc:
        parse_catalog(d, "test.yaml", ["A", "B"])
    assert message in str(exc.value), str(exc.value)
    assert str(exc.value).startswith("test.yaml")


def test_unknown_target_category_is_rejected(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base()))
    with pytest.raises(CatalogError, match=r"offer 'xs-a': target_category 'A'.*Known categories: \['B'\]"):
        load_catalog(path, ["B"])
    assert load_catalog(path, ["A"]).offer("xs-a").cost == 1.0
    path.write_text("offers: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(path)
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "missing.yaml")


def scores(n_found: int = 3) -> CustomerScores:
    """Three customers: c1 champion who buys A recently, c2 at risk, c3 needs attention."""
    return CustomerScores(
        customer_ids=["c1", "c2", "c3"], found=np.array([True, True, n_found == 3]),
        segment=np.array(["champions", "at_risk", "need_attention"], dtype=object),
        churn_probability=np.array([0.1, 0.6, 0.4]), next_purchase_probability=np.array([0.9, 0.3, 0.5]),
        expected_orders=np.array([4.0, 1.0, 2.0]), clv=np.array([500.0, 200.0, 100.0]),
        avg_order_value=np.array([50.0, 30.0, 20.0]),
        cross_sell=np.array([[np.nan], [0.4], [0.2]]), categories=["A"],
        days_since_category=np.array([[5.0], [200.0], [np.nan]]))


def test_expected_value_and_ranking_by_hand():
    cat = parse_catalog(base())
    spend = CategorySpend({"A": 20.0})
    res = arbitrate(scores(), cat, spend)
    ev = res["expected_value"]
    # c1: xs-a ineligible (buys A), ret: churn 0.1 < 0.3, up: 0.9 * (0.2 * 0.5 * 4 * 50) - 0.5 = 17.5
    assert np.isnan(ev[0, 0]) and res["why"][0, 0] == "already buys A"
    assert np.isnan(ev[0, 1]) and res["why"][0, 1] == "churn_probability below 0.3"
    assert ev[0, 2] == pytest.approx(0.9 * 0.2 * 0.5 * 4 * 50 - 0.5)
    # c2: xs-a 0.4 * 0.5 * 20 - 1 = 3.0; ret 0.6 * 0.1 * 200 * 2 - 2 = 22.0; up: not a champion
    assert ev[1, 0] == pytest.approx(3.0) and ev[1, 1] == pytest.approx(22.0)
    assert res["why"][1, 2] == "segment not targeted"
    # c3: xs-a 0.2 * 10 - 1 = 1.0; ret 0.4 * 0.1 * 100 * 2 - 2 = 6.0
    assert ev[2, 0] == pytest.approx(1.0) and ev[2, 1] == pytest.approx(6.0)
    top = pd.DataFrame(top_offers(scores(), cat, res, k=2))
    assert top[["customer_id", "rank", "offer_id"]].values.tolist() == [
        ["c1", 1, "up"], ["c2", 1, "ret"], ["c2", 2, "xs-a"], ["c3", 1, "ret"], ["c3", 2, "xs-a"]]


def test_an_uplift_offer_is_valued_on_incremental_conversions_and_never_made_below_zero():
    """xs-a with ``propensity: uplift``: expected value = uplift x value x lever - cost
    (value 0.5 x 20 = 10, cost 1). c2: uplift 0.3 in [0.1, 0.5] -> 0.3 x 10 - 1 = 2.0, not the
    propensity's 0.4 x 10 - 1 = 3.0. c3: uplift -0.2 in [-0.35, -0.05], the whole interval below
    zero: the contact would lower conversion, so no offer, and the reason says so. c1 keeps
    its earlier reason (already buys A). Propensity stays in the result, next to uplift."""
    d = base()
    d["offers"][0]["propensity"] = "uplift"
    cat = parse_catalog(d)
    s = scores()
    s.uplift = {"xs-a": (np.array([0.5, 0.3, -0.2]), np.array([0.1, 0.1, -0.35]), np.array([0.9, 0.5, -0.05]))}
    res = arbitrate(s, cat, CategorySpend({"A": 20.0}))
    assert res["why"][0, 0] == "already buys A"
    assert res["expected_value"][1, 0] == pytest.approx(0.3 * 10 - 1)
    assert res["propensity"][1, 0] == pytest.approx(0.4) and res["uplift"][1, 0] == pytest.approx(0.3)
    assert np.isnan(res["expected_value"][2, 0])
    assert res["why"][2, 0] == "uplift interval below zero: contact would lower conversion"
    # the other offers are valued on their propensity as before (ret for c2: 22.0)
    assert res["expected_value"][1, 1] == pytest.approx(22.0) and np.isnan(res["uplift"][1, 1])
    # without an uplift model the offer is not made, and the reason names the command
    res = arbitrate(scores(), cat, CategorySpend({"A": 20.0}))
    assert res["why"][1, 0] == "no uplift model for this offer (cvm train uplift)"
    with pytest.raises(CatalogError, match="propensity"):
        parse_catalog({**base(), "offers": [dict(base()["offers"][0], propensity="lift")]})


def test_channel_exclusion_and_minimum_value():
    cat = parse_catalog(base())
    spend = CategorySpend({"A": 20.0})
    res = arbitrate(scores(), cat, spend, channel="app", exclude_offer_ids=["up"])
    assert res["why"][1, 1] == "not offered through channel 'app'"
    assert res["why"][0, 2] == "excluded by the request"
    assert res["eligible"][1, 0]  # xs-a is offered through the app
    d = base()
    d["contact_policy"]["min_expected_value"] = 2.0
    res = arbitrate(scores(), parse_catalog(d), spend)
    assert not res["eligible"][2, 0] and res["why"][2, 0] == "expected value not above the minimum"


def test_contact_history_caps_and_cooldowns():
    """c2 had campaign C1 (= offer xs-a) 4 days ago and another contact 20 days ago: the
    offer's 10-day cooldown and the 2-contacts-in-30-days cap both apply; nothing on or
    after as_of counts."""
    cat = parse_catalog(base())
    as_of = date(2024, 3, 1)
    contacts = pd.DataFrame({
        "customer_id": ["c2", "c2", "c3", "c3", "c3"],
        "campaign_id": ["C1", "X", "C1", "X", "X"],
        "timestamp": pd.to_datetime(["2024-02-26 10:00", "2024-02-10 00:00", "2024-01-01 00:00", "2024-03-01 00:00",
                                     "2024-03-05 00:00"]),
    })
    hist = ContactHistory.from_frame(contacts, as_of)
    assert len(hist) == 3  # the two contacts at/after as_of are ignored
    state = hist.state(["c1", "c2", "c3"], cat)
    assert state.total[:, 0].tolist() == [0, 2, 0]
    assert state.offer_last[1, 0] == 4 and state.offer_last[2, 0] == 60
    res = arbitrate(scores(), cat, CategorySpend({"A": 20.0}), state)
    assert res["why"][1, 0] == "cooldown of 10 days"
    assert res["why"][1, 1] == "contact cap reached"
    assert res["eligible"][2, 0] and res["eligible"][2, 1]
    none = ContactState.none(3, cat)
    assert arbitrate(scores(), cat, CategorySpend({"A": 20.0}), none)["eligible"][1, 1]


def test_contact_state_equals_a_count_by_hand_per_customer():
    """The vectorised lookup against a plain per-customer count on a random contact table,
    with two caps, offers sharing campaigns, an offer cap, unknown and repeated ids."""
    rng = np.random.default_rng(7)
    d = base()
    d["contact_policy"]["caps"] = [{"max_contacts": 2, "window_days": 30}, {"max_contacts": 5, "window_days": 90}]
    d["offers"][1]["campaign_ids"] = ["C1", "C2"]
    d["offers"][1]["cap"] = {"max_contacts": 1, "window_days": 45}
    cat = parse_catalog(d)
    as_of = date(2024, 6, 1)
    n = 400
    contacts = pd.DataFrame({
        "customer_id": rng.integers(0, 60, n).astype(str),
        "campaign_id": rng.choice(["C1", "C2", "C3"], n),
        "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 200 * 24, n), unit="h"),
    })
    ids = [str(i) for i in range(70)] + ["5", "x"]
    history = ContactHistory.from_frame(contacts, as_of)
    state = history.state(ids, cat)
    past = contacts[contacts["timestamp"] < pd.Timestamp(as_of)]
    age = (pd.Timestamp(as_of) - past["timestamp"].dt.normalize()).dt.days
    offer_campaigns = [set(o.campaign_ids) for o in cat.offers]
    for i, cid in enumerate(ids):
        mine = past["customer_id"] == cid
        assert state.total[i].tolist() == [int((age[mine] <= 30).sum()), int((age[mine] <= 90).sum())]
        for j, campaigns in enumerate(offer_campaigns):
            hit = mine & past["campaign_id"].isin(campaigns)
            last = int(age[hit].min()) if hit.any() else np.iinfo("int64").max
            window = cat.offers[j].cap.window_days if cat.offers[j].cap else 0
            assert state.offer_last[i, j] == last, (cid, j)
            assert state.offer_count[i, j] == (int((age[hit] <= window).sum()) if window else 0), (cid, j)
        # one customer at a time (what /recommend asks) goes through plain loops: the same counts
        one = history.state([cid], cat)
        for got, want in ((one.total, state.total), (one.offer_count, state.offer_count),
                          (one.offer_last, state.offer_last)):
            assert got.dtype == want.dtype and got.tolist() == want[i:i + 1].tolist(), cid


def test_cold_start_customers_and_known_only_offers():
    d = base()
    d["offers"][1]["eligibility"]["known_customers_only"] = True
    res = arbitrate(scores(n_found=2), parse_catalog(d), CategorySpend({"A": 20.0}))
    assert res["why"][2, 1] == "known customers only" and res["eligible"][1, 1]
