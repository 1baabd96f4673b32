"""The same features on DuckDB and on Spark (local mode): equal within 1e-9 relative."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from features.pipeline import build_snapshot
from features.snapshot import read_snapshot
from sources.dataset import open_directory, resolve_dataset

pytestmark = pytest.mark.spark


def _both(dataset, as_of, home, duckdb_engine, spark_engine, tmp_path):
    frames = []
    for engine in (duckdb_engine, spark_engine):
        out = tmp_path / engine.name
        result = build_snapshot(dataset, as_of, engine, home, out=out)
        frames.append((result, read_snapshot(out, as_of)))
    return frames


def test_tiny_dataset_parity(tiny_dataset, home, duckdb_engine, spark_engine, tmp_path):
    (rd, d), (rs, s) = _both(open_directory(tiny_dataset), date(2024, 3, 1), home, duckdb_engine,
                             spark_engine, tmp_path)
    assert rd.feature_set.fingerprint() == rs.feature_set.fingerprint()
    assert rd.sources == rs.sources
    pd.testing.assert_frame_equal(d, s, check_exact=False, rtol=1e-9, atol=0)


def test_bad_rows_are_quarantined_alike(tmp_path, home, duckdb_engine, spark_engine):
    from sources.load import load_sources
    from tests.test_sources import BAD_CSV, EXPECTED_REASONS

    root = tmp_path / "bad"
    root.mkdir()
    (root / "transactions.csv").write_text(BAD_CSV)
    for engine in (duckdb_engine, spark_engine):
        src = load_sources(open_directory(root), engine)
        assert src.reports["transactions"].quarantined == EXPECTED_REASONS, engine.name


def test_completejourney_parity(home, duckdb_engine, spark_engine, tmp_path):
    ds = resolve_dataset("completejourney", home)
    (_rd, d), (_rs, s) = _both(ds, date(2017, 7, 1), home, duckdb_engine, spark_engine, tmp_path)
    assert len(d) > 2000
    pd.testing.assert_frame_equal(d, s, check_exact=False, rtol=1e-9, atol=0)


def test_synthetic_dataset_with_identities_parity(tmp_path, home, duckdb_engine, spark_engine):
    """Every feature group (events, campaigns, attributes) and golden ids, on both engines."""
    from sources.synth import generate

    out = tmp_path / "syn"
    generate(out, 1500, seed=5)
    (rd, d), (rs, s) = _both(open_directory(out), date(2025, 3, 1), home, duckdb_engine, spark_engine, tmp_path)
    assert rd.sources == rs.sources, "same rows quarantined for the same reasons"
    assert rd.profiles == rs.profiles
    assert {"events_view_90d", "abandoned_carts_90d", "response_rate_365d", "attr_birth_year"} <= set(d.columns)
    assert d.customer_id.str.startswith("C").mean() > 0.5, "golden ids"
    pd.testing.assert_frame_equal(d, s, check_exact=False, rtol=1e-9, atol=0)
