"""`cvm score-batch --engine spark` on Spark local[2]: the same outputs as DuckDB.

Both runs start from the same trained home with no snapshot for the date, so the Spark
run builds the features on Spark as well as scoring on it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.serving_fixtures import REPO

pytestmark = pytest.mark.spark

DAY = "2025-06-01"  # not built in the served home: each run builds its own snapshot
KEYS = {"scores.parquet": ["customer_id"], "cross_sell.parquet": ["customer_id", "category"],
        "offers.parquet": ["customer_id", "rank"], "segment_migration.parquet": ["from_segment", "to_segment"]}


@pytest.fixture(scope="module")
def both_engines(served_home, spark_engine, tmp_path_factory):
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from typer.testing import CliRunner

    from cvm.cli import app

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    root = tmp_path_factory.mktemp("batch-engines")
    outs = {}
    try:
        for engine in ("duckdb", "spark"):
            home = root / f"home-{engine}"
            shutil.copytree(served_home.home, home)
            outs[engine] = root / f"out-{engine}"
            args = ["score-batch", "--as-of", DAY, "--dataset", str(served_home.dataset), "--home", str(home),
                    "--config", str(REPO / "experiments" / "synthetic.yaml"), "--catalog", str(served_home.catalog),
                    "--out", str(outs[engine]), "--no-publish", "--engine", engine]
            if engine == "spark":
                args += ["--spark-master", "local[2]"]
            r = CliRunner().invoke(app, args, catch_exceptions=False)
            assert r.exit_code == 0, r.output
            meta = json.loads((home / "features" / served_home.name / f"as_of={DAY}" / "_snapshot.json").read_text())
            assert meta["engine"] == engine, "the snapshot was built by the run's own engine"
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
    return {e: out / f"as_of={DAY}" for e, out in outs.items()}


@pytest.mark.parametrize("name", list(KEYS))
def test_spark_outputs_equal_duckdb_within_1e6(both_engines, name):
    duck = pd.read_parquet(both_engines["duckdb"] / name).sort_values(KEYS[name]).reset_index(drop=True)
    spark = pd.read_parquet(both_engines["spark"] / name).sort_values(KEYS[name]).reset_index(drop=True)
    assert list(duck.columns) == list(spark.columns)
    assert len(duck) == len(spark) > 0
    for c in duck.columns:
        a, b = duck[c], spark[c]
        if pd.api.types.is_float_dtype(a):
            assert (a.isna() == b.isna()).all(), c
            np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=0, atol=1e-6, err_msg=c)
        else:
            assert a.astype(object).where(a.notna(), None).tolist() == \
                b.astype(object).where(b.notna(), None).tolist(), c


def test_spark_manifest_counts_match_its_files(both_engines):
    m = json.loads((both_engines["spark"] / "manifest.json").read_text())
    assert m["engine"] == "spark" and m["missing_tasks"] == []
    scores = pd.read_parquet(both_engines["spark"] / "scores.parquet")
    assert m["rows"]["in"] == m["rows"]["scored"] == m["files"]["scores.parquet"]["rows"] == len(scores)
    assert scores["customer_id"].is_unique
    for name in KEYS:
        assert m["files"][name]["rows"] == len(pd.read_parquet(both_engines["spark"] / name)), name
    assert m["rows"]["cross_sell_pairs"] == m["files"]["cross_sell.parquet"]["rows"]
    assert m["rows"]["offers"] == m["files"]["offers.parquet"]["rows"]
    duck = json.loads((both_engines["duckdb"] / "manifest.json").read_text())
    assert {k: v for k, v in duck["rows"].items()} == m["rows"]
    assert duck["models"] == m["models"]
