"""Golden tests of identifier normalisation and identity resolution on tiny tables."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal
from pydantic import ValidationError

from profiles.config import ResolutionConfig
from profiles.normalize import normalize_code, normalize_email, normalize_identifiers, normalize_phone
from profiles.resolve import apply_mapping, profile_id, resolve_identities

COLUMNS = ["source_system", "source_id", "id_type", "value", "seen_at"]


def identities(*rows: tuple) -> pd.DataFrame:
    """(source_system, source_id, id_type, value, seen_at as 'YYYY-MM-DD' or None)."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["seen_at"] = pd.to_datetime(df["seen_at"])
    return df


def mapping(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """Expected mapping: (source_system, source_id, anchor key "system:id")."""
    return pd.DataFrame({
        "source_system": pd.Series([r[0] for r in rows], dtype="str"),
        "source_id": pd.Series([r[1] for r in rows], dtype="str"),
        "customer_id": pd.Series([profile_id(*r[2].split(":", 1)) for r in rows], dtype="str"),
    })


def groups(result_mapping: pd.DataFrame) -> set[frozenset[str]]:
    """The partition of records ("system:id") into profiles, whatever the ids."""
    keys = result_mapping["source_system"] + ":" + result_mapping["source_id"]
    return {frozenset(g) for g in keys.groupby(result_mapping["customer_id"]).apply(list)}


# --- normalisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    " John.Doe+promo@GoogleMail.com ", "johndoe@gmail.com", "JOHN.DOE@gmail.com", "j.o.h.n.doe+x+y@googlemail.com",
], ids=["dots-tag-googlemail", "canonical", "upper-dots", "many-dots-tags"])
def test_gmail_spellings_are_one_address(raw: str) -> None:
    assert normalize_email(pd.Series([raw])).tolist() == ["johndoe@gmail.com"]


@pytest.mark.parametrize("raw", ["", "   ", "n/a", "john@", "@gmail.com", "a b@x.com", "a@b@c.com", "+promo@gmail.com"],
                         ids=["empty", "blank", "no-at", "no-domain", "no-local", "space", "two-ats", "only-tag"])
def test_invalid_emails_are_null(raw: str) -> None:
    assert normalize_email(pd.Series([raw])).isna().all()


def test_plus_tags_of_other_domains_are_kept_unless_asked() -> None:
    raw = pd.Series(["Ann.Lee+news@Example.com"])
    assert normalize_email(raw).tolist() == ["ann.lee+news@example.com"]
    assert normalize_email(raw, strip_plus_tags_all_domains=True).tolist() == ["ann.lee@example.com"]


@pytest.mark.parametrize("raw", ["+44 7700 900123", "07700 900123", "0044-7700-900123", "(07700) 900 123",
                                 "+44 (0)7700 900123", "447700900123"],
                         ids=["plus-cc", "national", "00-cc", "brackets", "plus-cc-trunk", "digits-with-cc"])
def test_phone_spellings_are_one_number(raw: str) -> None:
    assert normalize_phone(pd.Series([raw])).tolist() == ["447700900123"]


def test_default_country_code_is_configurable() -> None:
    assert normalize_phone(pd.Series(["0612345678"]), default_country_code="33").tolist() == ["33612345678"]


@pytest.mark.parametrize("raw", ["00000000000", "07777777777", "+44 0000 000000", "123456", "0123456",
                                 "1234567890123456", "", "n/a", None],
                         ids=["zeros", "one-digit", "cc-then-zeros", "short", "short-national", "too-long",
                              "empty", "no-digits", "null"])
def test_junk_phones_are_null(raw: str | None) -> None:
    assert normalize_phone(pd.Series([raw], dtype="str")).isna().all()


def test_codes_drop_spaces_and_dashes() -> None:
    assert normalize_code(pd.Series(["6012-3456 7890", " 601234567890 ", " - "])).tolist()[:2] == [
        "601234567890", "601234567890"]
    assert normalize_code(pd.Series([" - "])).isna().all()


def test_identifiers_normalised_by_their_type_keep_the_index() -> None:
    types = pd.Series(["email", "phone", "loyalty_card", "device", "cookie", "crm_id", "nickname", "email"],
                      index=[7, 7, 3, 1, 0, 9, 2, 5])
    values = pd.Series(["A@B.com", "07700 900123", "AB-12 3", " Dev-1A ", "CK 9", "Cr-7", " Bob ", "nope"],
                       index=types.index)
    expected = pd.Series(["a@b.com", "447700900123", "AB123", "dev1a", "ck9", "Cr7", "bob", None],
                         index=types.index, dtype="str")
    assert_series_equal(normalize_identifiers(types, values), expected)


# --- linking ----------------------------------------------------------------------------------

def test_links_are_transitive_and_unrelated_records_stay_apart() -> None:
    table = identities(
        ("crm", "A", "email", "ann@example.com", "2024-01-01"),
        ("web", "B", "email", "ANN@example.com ", "2024-01-05"),
        ("web", "B", "phone", "07700 900123", "2024-01-05"),
        ("pos", "C", "phone", "+44 7700 900123", "2024-02-01"),
        ("pos", "D", "email", "dan@example.com", "2024-01-02"),
    )
    result = resolve_identities(table, ResolutionConfig())
    expected = mapping(("crm", "A", "crm:A"), ("pos", "C", "crm:A"), ("pos", "D", "pos:D"), ("web", "B", "crm:A"))
    assert_frame_equal(result.mapping, expected)
    assert result.stats["profiles"] == 2
    assert result.stats["largest_profile_records"] == 3


def test_every_spelling_links_and_junk_links_nothing() -> None:
    table = identities(
        ("crm", "1", "email", " John.Doe+promo@GoogleMail.com ", "2024-01-01"),
        ("web", "2", "email", "johndoe@gmail.com", "2024-01-02"),
        ("crm", "3", "phone", "+44 7700 900123", "2024-01-01"),
        ("web", "4", "phone", "07700 900123", "2024-01-02"),
        ("app", "5", "phone", "0044-7700-900123", "2024-01-03"),
        ("pos", "6", "phone", "(07700) 900 123", "2024-01-04"),
        ("crm", "7", "phone", "00000000000", "2024-01-01"),
        ("web", "8", "phone", "00000000000", "2024-01-01"),
        ("pos", "9", "loyalty_card", "6012-3456 7890", "2024-01-01"),
        ("app", "10", "loyalty_card", "601234567890", "2024-01-02"),
    )
    result = resolve_identities(table, ResolutionConfig())
    assert groups(result.mapping) == {
        frozenset({"crm:1", "web:2"}), frozenset({"crm:3", "web:4", "app:5", "pos:6"}),
        frozenset({"crm:7"}), frozenset({"web:8"}), frozenset({"pos:9", "app:10"}),
    }
    assert result.stats["invalid_values"] == {"total": 2, "by_id_type": {"phone": 2}}


def _shared_device(n_records: int) -> pd.DataFrame:
    return identities(*[("app", f"r{i}", "device", "TABLET-STORE-1", f"2024-01-0{i + 1}") for i in range(n_records)])


def test_identifier_on_exactly_max_records_links_them() -> None:
    result = resolve_identities(_shared_device(3), ResolutionConfig(max_records_per_identifier=3))
    assert result.stats["profiles"] == 1
    assert result.stats["hub_identifiers"] == {"total": 0, "by_id_type": {}}


def test_hub_identifier_links_nothing_and_is_counted_without_its_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        result = resolve_identities(_shared_device(4), ResolutionConfig(max_records_per_identifier=3))
    assert result.stats["profiles"] == 4
    assert result.stats["hub_identifiers"] == {"total": 1, "by_id_type": {"device": 1}}
    assert "tablet" not in repr(result.stats).lower()
    assert "tablet" not in caplog.text.lower()


def test_hub_does_not_stop_other_links() -> None:
    table = pd.concat([_shared_device(4), identities(
        ("app", "r0", "email", "x@example.com", "2024-01-01"),
        ("app", "r1", "email", "x@example.com", "2024-01-02"),
    )])
    result = resolve_identities(table, ResolutionConfig(max_records_per_identifier=3))
    assert groups(result.mapping) == {frozenset({"app:r0", "app:r1"}), frozenset({"app:r2"}), frozenset({"app:r3"})}


def test_non_link_types_do_not_merge_but_records_are_mapped() -> None:
    table = identities(
        ("web", "1", "cookie", "ck1", "2024-01-01"),
        ("web", "2", "cookie", "CK1", "2024-01-02"),
    )
    result = resolve_identities(table, ResolutionConfig(link_types=["email"]))
    assert groups(result.mapping) == {frozenset({"web:1"}), frozenset({"web:2"})}
    assert resolve_identities(table, ResolutionConfig()).stats["profiles"] == 1


# --- stable ids -------------------------------------------------------------------------------

def test_id_is_sha1_of_anchor_key() -> None:
    # sha1("crm:1") = 1ed4737672cdd6ea09cb8959085f791a133fe4b3, computed by hand with sha1sum
    assert profile_id("crm", "1") == "C1ed4737672cdd6ea"
    table = identities(("web", "2", "email", "a@x.com", "2024-03-01"), ("crm", "1", "email", "a@x.com", "2024-01-01"))
    assert set(resolve_identities(table, ResolutionConfig()).mapping["customer_id"]) == {"C1ed4737672cdd6ea"}


def test_anchor_is_earliest_seen_not_smallest_key() -> None:
    table = identities(("aaa", "1", "email", "a@x.com", "2024-03-01"), ("zzz", "9", "email", "a@x.com", "2024-01-01"))
    assert set(resolve_identities(table, ResolutionConfig()).mapping["customer_id"]) == {profile_id("zzz", "9")}


@pytest.mark.parametrize("seen", [("2024-01-01", "2024-01-01"), (None, None)], ids=["tie", "no-seen-at"])
def test_anchor_ties_go_to_smallest_key(seen: tuple) -> None:
    table = identities(("web", "1", "email", "a@x.com", seen[0]), ("crm", "9", "email", "a@x.com", seen[1]))
    assert set(resolve_identities(table, ResolutionConfig()).mapping["customer_id"]) == {profile_id("crm", "9")}


def test_record_without_seen_at_is_not_the_anchor() -> None:
    table = identities(("crm", "1", "email", "a@x.com", None), ("web", "2", "email", "a@x.com", "2024-01-01"))
    assert set(resolve_identities(table, ResolutionConfig()).mapping["customer_id"]) == {profile_id("web", "2")}


def test_shuffled_input_gives_the_same_mapping() -> None:
    table = identities(
        ("crm", "A", "email", "ann@example.com", "2024-01-03"),
        ("web", "B", "email", "ann@example.com", "2024-01-03"),
        ("web", "B", "phone", "07700 900123", "2024-01-01"),
        ("pos", "C", "phone", "07700900123", "2024-02-01"),
        ("pos", "D", "device", "d-1", "2024-01-02"),
        ("app", "E", "device", "D1", "2024-01-02"),
        ("app", "F", "cookie", "c", None),
    )
    expected = resolve_identities(table, ResolutionConfig()).mapping
    for seed in range(5):
        shuffled = table.sample(frac=1, random_state=seed).set_axis(range(10, 17))
        assert_frame_equal(resolve_identities(shuffled, ResolutionConfig()).mapping, expected)
    assert expected["customer_id"].nunique() == 3
    assert set(expected["customer_id"]) == {profile_id("web", "B"), profile_id("app", "E"), profile_id("app", "F")}


def test_merging_two_profiles_keeps_the_older_anchors_id() -> None:
    before = identities(
        ("web", "1", "email", "a@x.com", "2024-02-01"),
        ("web", "2", "email", "a@x.com", "2024-02-02"),
        ("zzz", "3", "phone", "07700 900123", "2024-01-01"),
        ("zzz", "4", "phone", "07700 900123", "2024-03-01"),
    )
    old = resolve_identities(before, ResolutionConfig()).mapping
    assert set(old["customer_id"]) == {profile_id("web", "1"), profile_id("zzz", "3")}
    after = pd.concat([before, identities(("web", "2", "phone", "07700900123", "2024-04-01"))])
    new = resolve_identities(after, ResolutionConfig()).mapping
    assert set(new["customer_id"]) == {profile_id("zzz", "3")}


# --- point in time ----------------------------------------------------------------------------

def test_link_seen_after_cutoff_does_not_merge() -> None:
    table = identities(
        ("crm", "1", "email", "a@x.com", "2024-01-01"),
        ("web", "2", "email", "b@x.com", "2024-01-01"),
        ("web", "2", "email", "a@x.com", "2024-06-01"),   # the link, discovered later
        ("app", "3", "email", "c@x.com", "2024-07-01"),   # a record only seen later
    )
    early = resolve_identities(table, ResolutionConfig(), cutoff=datetime(2024, 3, 1))
    assert_frame_equal(early.mapping, mapping(("crm", "1", "crm:1"), ("web", "2", "web:2")))
    assert early.stats["rows_outside_cutoff"] == 2
    late = resolve_identities(table, ResolutionConfig(), cutoff=datetime(2024, 6, 2))
    assert_frame_equal(late.mapping, mapping(("crm", "1", "crm:1"), ("web", "2", "crm:1")))


def test_cutoff_is_exclusive_and_works_with_aware_timestamps() -> None:
    table = identities(("crm", "1", "email", "a@x.com", "2024-01-01"), ("web", "2", "email", "a@x.com", "2024-03-01"))
    table["seen_at"] = table["seen_at"].dt.tz_localize("UTC")
    result = resolve_identities(table, ResolutionConfig(), cutoff=datetime(2024, 3, 1))
    assert result.mapping["source_id"].tolist() == ["1"]


def test_cutoff_needs_seen_at() -> None:
    table = identities(("crm", "1", "email", "a@x.com", "2024-01-01")).drop(columns="seen_at")
    with pytest.raises(ValueError, match="seen_at"):
        resolve_identities(table, ResolutionConfig(), cutoff=datetime(2024, 3, 1))


def test_nothing_before_cutoff_is_an_error() -> None:
    table = identities(("crm", "1", "email", "a@x.com", "2024-05-01"))
    with pytest.raises(ValueError, match="no usable rows"):
        resolve_identities(table, ResolutionConfig(), cutoff=datetime(2024, 3, 1))


# --- contracts --------------------------------------------------------------------------------

def test_missing_column_is_named() -> None:
    table = identities(("crm", "1", "email", "a@x.com", "2024-05-01")).drop(columns="id_type")
    with pytest.raises(ValueError, match="'id_type'"):
        resolve_identities(table, ResolutionConfig())


def test_rows_without_record_key_are_counted_not_used() -> None:
    table = identities(("crm", "1", "email", "a@x.com", "2024-01-01"), ("crm", " ", "email", "a@x.com", "2024-01-01"),
                       (None, "2", "email", "a@x.com", "2024-01-01"))
    result = resolve_identities(table, ResolutionConfig())
    assert result.stats["rows_missing_key"] == 2
    assert result.stats["records"] == 1


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ResolutionConfig(max_records=3)  # type: ignore[call-arg]


# --- applying the mapping ---------------------------------------------------------------------

def test_apply_mapping_by_key_by_id_and_unmatched() -> None:
    result = resolve_identities(identities(
        ("crm", "1", "email", "a@x.com", "2024-01-01"), ("web", "2", "email", "a@x.com", "2024-01-02"),
    ), ResolutionConfig())
    tx = pd.DataFrame({"customer_id": ["2", "1", "9"], "source_system": ["web", None, "pos"], "amount": [1.0, 2.0, 3.0]},
                      index=[5, 6, 7])
    out = apply_mapping(tx, result.mapping)
    anchor = profile_id("crm", "1")
    assert out["customer_id"].tolist() == [anchor, anchor, profile_id("pos", "9")]
    assert out.index.tolist() == [5, 6, 7] and tx["customer_id"].tolist() == ["2", "1", "9"]


def test_apply_mapping_refuses_ambiguous_record_ids() -> None:
    result = resolve_identities(identities(
        ("crm", "1", "email", "a@x.com", "2024-01-01"), ("web", "1", "email", "b@x.com", "2024-01-02"),
    ), ResolutionConfig())
    with pytest.raises(ValueError, match="more than one source system"):
        apply_mapping(pd.DataFrame({"customer_id": ["1"]}), result.mapping)
    out = apply_mapping(pd.DataFrame({"customer_id": ["1"]}), result.mapping, default_source_system="web")
    assert out["customer_id"].tolist() == [profile_id("web", "1")]


def test_sha1_helper_matches_hashlib() -> None:
    assert profile_id("pos", "x y") == "C" + hashlib.sha1(b"pos:x y").hexdigest()[:16]
