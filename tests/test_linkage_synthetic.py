"""Identity resolution measured against the synthetic generator's ground truth."""

from __future__ import annotations

import pandas as pd
import pytest

from profiles.config import ResolutionConfig
from profiles.evaluate import linkage_quality
from profiles.resolve import resolve_identities
from sources.synth import generate


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("linkage") / "syn"
    generate(out, 20_000, seed=11)
    return pd.read_parquet(out / "identities"), pd.read_parquet(out / "truth" / "records.parquet")


def quality(identities, truth, **config):
    return linkage_quality(resolve_identities(identities, ResolutionConfig(**config)).mapping, truth)


def test_hub_guard_buys_precision_without_losing_recall(synthetic):
    identities, truth = synthetic
    guarded = quality(identities, truth)
    unguarded = quality(identities, truth, max_records_per_identifier=10**9)
    # junk identifiers (noemail@…, 000… phones) glue unrelated people together without the guard
    assert unguarded["precision"] < guarded["precision"] - 0.05
    assert guarded["recall"] == pytest.approx(unguarded["recall"], abs=0.005)
    assert guarded["precision"] > 0.95


def test_normalisation_is_what_makes_recall(synthetic):
    """Raw values (case, dots, +tags, phone formats) would split most people."""
    identities, truth = synthetic
    normalised = quality(identities, truth)
    exact = identities.copy()
    exact["id_type"] = "raw_" + exact["id_type"]  # unknown types: only strip + lowercase
    raw = quality(exact, truth, link_types=sorted(exact["id_type"].unique()))
    assert normalised["recall"] > raw["recall"] + 0.05
