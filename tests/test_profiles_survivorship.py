"""Golden tests of golden records: which value survives when a profile's records disagree."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from pydantic import ValidationError

from profiles import survivorship
from profiles.config import ResolutionConfig, SurvivorshipConfig
from profiles.resolve import profile_id, resolve_identities
from profiles.survivorship import golden_records

ID_COLUMNS = ["source_system", "source_id", "id_type", "value", "seen_at"]
CUSTOMER_COLUMNS = ["customer_id", "source_system", "updated_at"]


def identities(*rows: tuple) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=ID_COLUMNS)
    df["seen_at"] = pd.to_datetime(df["seen_at"])
    return df


def customers(columns: list[str], *rows: tuple) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    if "updated_at" in df.columns:
        df["updated_at"] = pd.to_datetime(df["updated_at"])
    return df


def linked_by_card(records: list[str], day: str = "2024-01-01") -> pd.DataFrame:
    """Records of system "s" that are one person: they share a loyalty card."""
    return identities(*[("s", r, "loyalty_card", "1234", day) for r in records])


def golden(ids: pd.DataFrame, cust: pd.DataFrame | None = None, *, rules: dict | None = None,
           cutoff: datetime | None = None, max_records: int = 5, **config: object) -> pd.DataFrame:
    resolution = resolve_identities(ids, ResolutionConfig(max_records_per_identifier=max_records), cutoff=cutoff)
    return golden_records(ids, resolution, cust, SurvivorshipConfig(attribute_rules=rules or {}, **config))


def test_profile_with_conflicting_records() -> None:
    ids = identities(
        ("crm", "1", "email", "ann@x.com", "2024-01-01"),
        ("crm", "1", "phone", "07700 900123", "2024-01-01"),
        ("web", "2", "email", "Ann@X.com", "2024-02-01"),
        ("web", "2", "email", "ann.b@x.com", "2024-03-01"),
        ("app", "3", "email", "ANN.B@x.com", "2024-03-05"),
        ("app", "3", "phone", "+44 7700 900999", "2024-03-05"),
        ("app", "3", "device", "dev1", "2024-03-05"),
        ("pos", "4", "device", "DEV1", "2024-01-15"),
        ("pos", "5", "email", "bob@x.com", "2024-01-10"),
    )
    cust = customers(
        [*CUSTOMER_COLUMNS, "city", "tier", "age"],
        ("1", "crm", "2024-01-01", "Leeds", "gold", 30),
        ("2", "web", "2024-03-01", None, "silver", 31),     # newest row, but no city
        ("3", "app", "2024-02-01", "York", "silver", 29),
        ("5", "pos", "2024-01-01", "Bath", "bronze", 50),
        ("6", "crm", "2024-01-01", "Hull", None, 20),      # no identity rows: its own profile
    )
    result = golden(ids, cust, rules={"tier": "most_frequent", "age": "max"})
    ann, bob, hull = profile_id("crm", "1"), profile_id("pos", "5"), profile_id("crm", "6")
    expected = pd.DataFrame({
        "customer_id": pd.Series([ann, bob, hull], dtype="str"),
        "n_records": np.array([4, 1, 1], dtype=np.int64),
        "source_systems": pd.Series(["app,crm,pos,web", "pos", "crm"], dtype="str"),
        "first_seen": pd.to_datetime(["2024-01-01", "2024-01-10", None]),
        "last_seen": pd.to_datetime(["2024-03-05", "2024-01-10", None]),
        # ann@x.com and ann.b@x.com are on two records each: the later seen wins
        "email": pd.Series(["ann.b@x.com", "bob@x.com", None], dtype="str"),
        "phone": pd.Series(["447700900999", None, None], dtype="str"),
        "city": pd.Series(["York", "Bath", "Hull"], dtype="str"),
        "tier": pd.Series(["silver", "bronze", None], dtype="str"),
        "age": np.array([31, 50, 20], dtype=np.int64),
    }).sort_values("customer_id").reset_index(drop=True)
    assert_frame_equal(result, expected)


def test_most_recent_non_null_beats_a_newer_null() -> None:
    cust = customers([*CUSTOMER_COLUMNS, "city"],
                     ("a", "s", "2024-01-01", "Leeds"), ("b", "s", "2024-02-01", "York"), ("a", "s", "2024-03-01", None))
    assert golden(linked_by_card(["a", "b"]), cust)["city"].tolist() == ["York"]


def test_most_recent_tie_goes_to_smallest_record_key() -> None:
    ids = identities(("web", "1", "email", "a@x.com", "2024-01-01"), ("crm", "2", "email", "a@x.com", "2024-01-01"),
                     ("crm", "3", "email", "a@x.com", "2024-01-01"))
    cust = customers([*CUSTOMER_COLUMNS, "city"], ("1", "web", "2024-01-01", "Bath"),
                     ("3", "crm", "2024-01-01", "Hull"), ("2", "crm", "2024-01-01", "York"))
    assert golden(ids, cust)["city"].tolist() == ["York"]   # (crm, 2) < (crm, 3) < (web, 1)


@pytest.mark.parametrize(("with_time", "expected"), [(True, "red"), (False, "blue")],
                         ids=["tie-to-most-recent", "no-time-tie-to-smallest"])
def test_most_frequent_tie(with_time: bool, expected: str) -> None:
    cust = customers([*CUSTOMER_COLUMNS, "colour"],
                     ("a", "s", "2024-01-01", "blue"), ("b", "s", "2024-01-02", "blue"),
                     ("c", "s", "2024-01-05", "red"), ("d", "s", "2024-01-03", "red"), ("e", "s", "2024-01-09", None))
    if not with_time:
        cust = cust.drop(columns="updated_at")
    result = golden(linked_by_card(list("abcde")), cust, rules={"colour": "most_frequent"})
    assert result["colour"].tolist() == [expected]


def test_most_frequent_counts_records_not_rows() -> None:
    cust = customers([*CUSTOMER_COLUMNS, "colour"],
                     ("a", "s", "2024-01-01", "blue"), ("a", "s", "2024-01-02", "blue"), ("a", "s", "2024-01-03", "blue"),
                     ("b", "s", "2024-01-01", "red"), ("c", "s", "2024-01-01", "red"))
    assert golden(linked_by_card(list("abc")), cust, rules={"colour": "most_frequent"})["colour"].tolist() == ["red"]


def test_default_rule_without_updated_at_is_most_frequent() -> None:
    cust = customers(["customer_id", "source_system", "colour"], ("a", "s", "blue"), ("b", "s", "red"), ("c", "s", "red"))
    assert golden(linked_by_card(list("abc")), cust)["colour"].tolist() == ["red"]


def test_min_and_max() -> None:
    cust = customers([*CUSTOMER_COLUMNS, "lo", "hi"], ("a", "s", "2024-01-01", 3.5, "b"), ("b", "s", "2024-01-02", 1.5, "c"))
    result = golden(linked_by_card(["a", "b"]), cust, rules={"lo": "min", "hi": "max"})
    assert (result["lo"].tolist(), result["hi"].tolist()) == ([1.5], ["c"])


def test_email_tie_goes_to_latest_seen_then_smallest_and_hubs_never_win() -> None:
    ids = pd.concat([
        linked_by_card(["a", "b", "c", "d"]),
        identities(("s", "a", "email", "x@a.com", "2024-01-01"), ("s", "b", "email", "y@a.com", "2024-01-02"),
                   ("s", "c", "phone", "07700 900222", "2024-01-02"), ("s", "d", "phone", "07700 900111", "2024-01-02")),
        # on all four records but on six in all: a hub, nobody's address
        identities(*[("s", r, "email", "noemail@none.com", "2024-01-05") for r in ["a", "b", "c", "d", "e", "f"]]),
    ])
    result = golden(ids)
    anchor = result[result["customer_id"] == profile_id("s", "a")]
    assert anchor[["email", "phone"]].values.tolist() == [["y@a.com", "447700900111"]]
    assert result.loc[result["n_records"] == 1, "email"].isna().all()


def test_cutoff_of_the_resolution_applies_to_customers() -> None:
    ids = identities(("s", "a", "email", "a@x.com", "2024-01-01"), ("s", "b", "email", "a@x.com", "2024-05-01"))
    cust = customers([*CUSTOMER_COLUMNS, "city"],
                     ("a", "s", "2024-01-01", "Leeds"), ("a", "s", "2024-04-01", "York"), ("b", "s", "2024-01-02", "Bath"),
                     ("a", "s", None, "Hull"))
    result = golden(ids, cust, cutoff=datetime(2024, 3, 1))
    # b's identities are only seen after the cutoff: b's customers row is a profile of its own
    expected = pd.DataFrame({"customer_id": [profile_id("s", "a"), profile_id("s", "b")], "city": ["Leeds", "Bath"]},
                            dtype="str").sort_values("customer_id").reset_index(drop=True)
    assert_frame_equal(result[["customer_id", "city"]], expected)
    assert result["last_seen"].max() == pd.Timestamp("2024-01-01")


def test_customers_without_source_system_match_by_id() -> None:
    ids = identities(("crm", "a", "email", "a@x.com", "2024-01-01"), ("web", "b", "email", "a@x.com", "2024-01-02"))
    cust = customers(["customer_id", "tier"], ("b", "gold"), ("zz", "silver"))
    result = golden(ids, cust)
    assert dict(zip(result["customer_id"], result["tier"], strict=True)) == {
        profile_id("crm", "a"): "gold", profile_id("", "zz"): "silver"}
    named = golden(ids, cust, customers_source_system="web")
    assert set(named["customer_id"]) == {profile_id("crm", "a"), profile_id("web", "zz")}


def test_attribute_named_like_a_golden_column_is_prefixed() -> None:
    cust = customers(["customer_id", "source_system", "email"], ("a", "s", "Typed@Form.com"))
    result = golden(identities(("s", "a", "email", "a@x.com", "2024-01-01")), cust)
    assert result[["email", "customers_email"]].values.tolist() == [["a@x.com", "Typed@Form.com"]]


def test_without_seen_at_first_and_last_seen_are_null() -> None:
    result = golden(linked_by_card(["a", "b"]).drop(columns="seen_at"))
    assert result[["first_seen", "last_seen"]].isna().all().all()
    assert result["n_records"].tolist() == [2]


def test_shuffled_inputs_give_the_same_golden_records() -> None:
    ids = pd.concat([linked_by_card(["a", "b", "c"]), identities(
        ("s", "a", "email", "x@a.com", "2024-01-01"), ("s", "b", "email", "y@a.com", "2024-01-01"),
        ("t", "q", "email", "q@a.com", "2024-01-01"))])
    cust = customers([*CUSTOMER_COLUMNS, "city", "colour"],
                     ("a", "s", "2024-01-01", "Leeds", "red"), ("b", "s", "2024-01-01", "York", "blue"),
                     ("c", "s", "2024-01-01", "Bath", "blue"), ("q", "t", "2024-01-01", "Hull", "red"))
    expected = golden(ids, cust)
    assert expected.loc[expected["n_records"] == 3, ["city", "email"]].values.tolist() == [["Leeds", "x@a.com"]]
    for seed in range(4):
        assert_frame_equal(golden(ids.sample(frac=1, random_state=seed), cust.sample(frac=1, random_state=seed)),
                           expected)


def test_rules_for_unknown_columns_and_impossible_rules_are_errors() -> None:
    ids = linked_by_card(["a"])
    with pytest.raises(ValueError, match="colour"):
        golden(ids, customers([*CUSTOMER_COLUMNS, "city"], ("a", "s", "2024-01-01", "x")), rules={"colour": "max"})
    with pytest.raises(ValueError, match="updated_at"):
        golden(ids, customers(["customer_id", "city"], ("a", "x")), rules={"city": "most_recent"})
    with pytest.raises(ValidationError):
        SurvivorshipConfig(attribute_rules={"city": "latest"})


def test_mapping_in_another_row_order_gives_the_same_golden_records() -> None:
    ids = pd.concat([linked_by_card(["a", "b"]), identities(("t", "q", "email", "q@a.com", "2024-01-03"))])
    resolution = resolve_identities(ids, ResolutionConfig())
    reordered = dataclasses.replace(resolution, mapping=resolution.mapping.iloc[::-1].set_axis([7, 8, 9]))
    assert_frame_equal(golden_records(ids, reordered), golden_records(ids, resolution))


def test_many_source_systems_are_joined_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = identities(*[(system, "1", "email", "a@x.com", "2024-01-01") for system in ["web", "app", "crm"]])
    expected = golden(ids)
    assert expected["source_systems"].tolist() == ["app,crm,web"]
    monkeypatch.setattr(survivorship, "_MAX_BITMASK_SYSTEMS", 1)  # force the path for > 62 systems
    assert_frame_equal(golden(ids), expected)
