"""Linkage quality against known truth: did we merge the right records, and only those?

Pairwise measures over record pairs: a pair is predicted when both records share a
profile, true when both belong to one person. Pair counts come from contingency
counts (n records in a profile: n(n-1)/2 pairs), never from listing pairs, so a
profile of a million records costs nothing.

Records are evaluated on the intersection of ``mapping`` and ``truth``; how many each
side lacks is reported, since a silently smaller evaluation set flatters the result.
With no predicted pairs precision is 1.0 (no wrong link was made); with no true pairs
recall is 1.0 (no link was missed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from profiles.identities import require_columns

__all__ = ["linkage_quality"]

_KEY = ["source_system", "source_id"]


def _pairs(sizes: np.ndarray) -> int:
    sizes = sizes.astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _unique_keys(df: pd.DataFrame, table: str) -> None:
    duplicated = int(df.duplicated(_KEY).sum())
    if duplicated:
        raise ValueError(f"{table}: {duplicated} records appear more than once; a record has one label")


def linkage_quality(mapping: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Pairwise precision, recall and F1 of ``mapping`` against ``truth``, with counts.

    ``mapping``: source_system, source_id, customer_id (a Resolution's mapping).
    ``truth``: source_system, source_id, person_id.
    """
    require_columns(mapping, [*_KEY, "customer_id"], "mapping")
    require_columns(truth, [*_KEY, "person_id"], "truth")
    _unique_keys(mapping, "mapping")
    _unique_keys(truth, "truth")
    joined = mapping[[*_KEY, "customer_id"]].merge(truth[[*_KEY, "person_id"]], on=_KEY, how="inner")
    profile_codes, _ = pd.factorize(joined["customer_id"])
    person_codes, _ = pd.factorize(joined["person_id"])
    cells = pd.DataFrame({"profile": profile_codes, "person": person_codes}).value_counts()
    profile_sizes = np.bincount(profile_codes) if len(joined) else np.zeros(0, np.int64)
    person_sizes = np.bincount(person_codes) if len(joined) else np.zeros(0, np.int64)
    true_positive = _pairs(cells.to_numpy())
    predicted, actual = _pairs(profile_sizes), _pairs(person_sizes)
    precision = true_positive / predicted if predicted else 1.0
    recall = true_positive / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    profiles_per_person = cells.index.get_level_values("person").value_counts()
    persons_per_profile = cells.index.get_level_values("profile").value_counts()
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_positive_pairs": true_positive,
        "predicted_pairs": predicted,
        "true_pairs": actual,
        "records_evaluated": len(joined),
        "records_missing_from_truth": len(mapping) - len(joined),
        "records_missing_from_mapping": len(truth) - len(joined),
        "true_persons": len(person_sizes),
        "predicted_profiles": len(profile_sizes),
        "persons_split": int((profiles_per_person > 1).sum()),
        "profiles_merging_persons": int((persons_per_profile > 1).sum()),
    }
