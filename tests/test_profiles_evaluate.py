"""Golden tests of pairwise linkage quality, computed by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from profiles.evaluate import linkage_quality


def mapping(groups: dict[str, str]) -> pd.DataFrame:
    """record -> customer_id, all records of source system "s"."""
    return pd.DataFrame({"source_system": "s", "source_id": list(groups), "customer_id": list(groups.values())})


def truth(groups: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"source_system": "s", "source_id": list(groups), "person_id": list(groups.values())})


def test_hand_computed_example() -> None:
    # truth {a,b,c} {d,e}; predicted {a,b} {c,d,e}; f only predicted, g only true
    # TP pairs: ab + de = 2; predicted pairs: 1 + 3 = 4; true pairs: 3 + 1 = 4
    predicted = mapping({"a": "P1", "b": "P1", "c": "P2", "d": "P2", "e": "P2", "f": "P3"})
    actual = truth({"a": "T1", "b": "T1", "c": "T1", "d": "T2", "e": "T2", "g": "T3"})
    assert linkage_quality(predicted, actual) == {
        "precision": 0.5, "recall": 0.5, "f1": 0.5,
        "true_positive_pairs": 2, "predicted_pairs": 4, "true_pairs": 4,
        "records_evaluated": 5, "records_missing_from_truth": 1, "records_missing_from_mapping": 1,
        "true_persons": 2, "predicted_profiles": 2,
        "persons_split": 1,              # T1 is in P1 and P2
        "profiles_merging_persons": 1,   # P2 holds T1 and T2
    }


def test_asymmetric_example() -> None:
    # truth {a,b,c,d}; predicted {a,b,c} {d}: TP 3, predicted 3, true 6 -> P 1, R 0.5, F1 2/3
    result = linkage_quality(mapping({"a": "P", "b": "P", "c": "P", "d": "Q"}), truth(dict.fromkeys("abcd", "T")))
    assert (result["precision"], result["recall"]) == (1.0, 0.5)
    assert result["f1"] == pytest.approx(2 / 3)
    assert (result["persons_split"], result["profiles_merging_persons"]) == (1, 0)


def test_no_pairs_on_either_side_is_perfect_not_undefined() -> None:
    result = linkage_quality(mapping({"a": "P", "b": "Q"}), truth({"a": "T", "b": "U"}))
    assert (result["precision"], result["recall"], result["f1"]) == (1.0, 1.0, 1.0)


def test_source_system_is_part_of_the_record_key() -> None:
    predicted = pd.DataFrame({"source_system": ["crm", "web"], "source_id": ["1", "1"], "customer_id": ["P", "P"]})
    actual = pd.DataFrame({"source_system": ["crm", "web"], "source_id": ["1", "1"], "person_id": ["T", "U"]})
    result = linkage_quality(predicted, actual)
    assert (result["precision"], result["recall"], result["predicted_pairs"]) == (0.0, 1.0, 1)


def test_a_record_labelled_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="more than once"):
        linkage_quality(mapping({"a": "P"}), pd.concat([truth({"a": "T"}), truth({"a": "U"})]))
