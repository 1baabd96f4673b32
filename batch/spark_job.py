"""The nightly batch on Apache Spark: the same scoring, spread over executors.

The snapshot is read by Spark; ``mapInPandas`` hands each executor Arrow batches of it,
and every batch goes through the very function the embedded job uses
(``batch.score.score_chunk``: the LightGBM boosters over float32 matrices, the BG/NBD
formulas, the next-best-offer engine). The champions, the catalog, the contact history
and the population's category spend are broadcast once. One pass yields the scores, the
cross-sell pairs and the offers as one tagged table, cached and written as three Parquet
outputs; reconciliation and segment migration are Spark aggregations. Output files are
directories of part files (Spark's convention), in the same staging directory swapped in
atomically as the embedded job's.

On a cluster the output root must be a filesystem the driver can rename in (it is
written by the executors and swapped by the driver), and the executors need this package
installed (the same wheel as the driver).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from pathlib import Path

import pandas as pd

from base.engines import drop_spark_bookkeeping
from batch.job import (
    BatchResult,
    base_manifest,
    check_reconciliation,
    clean_abandoned,
    output_dir,
    previous_scores_day,
    staged_output,
    write_manifest,
)
from batch.score import SCORE_COLUMNS, BatchDecision, score_chunk
from features.definitions import slug
from scoring.catalog import Catalog
from scoring.champions import Champion, categories_of, missing_tasks
from scoring.contacts import ContactHistory
from scoring.decide import OFFER_DECISION_COLUMNS
from scoring.nbo import OFFER_COLUMNS, CategorySpend
from scoring.uplift_scores import UpliftChampion

#: rows per Arrow batch handed to the scoring function (bigger batches, fewer booster calls)
ARROW_BATCH_ROWS = 50_000

#: the tagged table one pass produces (kind = scores | cross_sell | offers): column -> type
_TAGGED = {"kind": "string", "customer_id": "string", "rfm_segment": "string", "churn_probability": "double",
           "next_purchase_probability": "double", "expected_orders": "double", "clv": "double",
           "best_offer_id": "string", "best_offer_expected_value": "double", "category": "string",
           "probability": "double", "rank": "long", "offer_id": "string", "name": "string", "type": "string",
           "channel": "string", "propensity": "double", "uplift": "double", "uplift_low": "double",
           "uplift_high": "double", "value": "double", "expected_value": "double",
           "decision_id": "string", "arm": "string", "pscore": "double", "policy_offer_id": "string",
           "offers": "string"}
TAGGED_COLUMNS = tuple(_TAGGED)
_PANDAS = {"string": "object", "double": "float64", "long": "Int64"}


def _tagged_schema():
    from pyspark.sql import types as T

    spark = {"string": T.StringType(), "double": T.DoubleType(), "long": T.LongType()}
    return T.StructType([T.StructField(c, spark[t], True) for c, t in _TAGGED.items()])


def tag(scores: pd.DataFrame, cross_sell: pd.DataFrame, offers: pd.DataFrame,
        decisions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The outputs of one chunk as one table with a ``kind`` column (``TAGGED_COLUMNS``)."""
    dtypes = {c: _PANDAS[t] for c, t in _TAGGED.items()}
    if decisions is not None:
        decisions = decisions[[c for c in decisions.columns if c in _TAGGED]]
    parts = [frame.assign(kind=kind) for kind, frame in (("scores", scores), ("cross_sell", cross_sell),
                                                          ("offers", offers), ("decisions", decisions))
             if frame is not None and len(frame)]
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in dtypes.items()})
    return pd.concat(parts, ignore_index=True).reindex(columns=list(TAGGED_COLUMNS)).astype(dtypes)


def category_spend_spark(df, categories: list[str], *, window_days: int, horizon_days: int) -> CategorySpend:
    """``CategorySpend.from_snapshot`` as one Spark aggregation: the mean spend of the
    customers who bought each category in the window, scaled to the horizon."""
    from pyspark.sql import functions as F

    if not categories:
        return CategorySpend({})
    aggs = []
    for i, c in enumerate(categories):
        spend = F.col(f"spend_share_{slug(c)}").cast("double") * F.col("monetary").cast("double")
        aggs.append(F.avg(F.when((spend > 0) & ~F.isnan(spend), spend)).alias(f"c{i}"))
    row = df.agg(*aggs).first()
    return CategorySpend({c: float(row[f"c{i}"] * horizon_days / window_days) if row[f"c{i}"] is not None else 0.0
                          for i, c in enumerate(categories)})


def score_dataframe(df, champions: Mapping[str, Champion], catalog: Catalog | None,
                    contacts: ContactHistory | None, *, k: int, window_days: int,
                    decision: BatchDecision | None = None, uplift: UpliftChampion | None = None):
    """The tagged output of every snapshot row, as a (lazy) Spark DataFrame."""
    session = df.sparkSession
    categories = categories_of(dict(champions))
    if catalog is not None:
        catalog.check_categories(categories, "offer catalog")
    spend = (category_spend_spark(df, categories, window_days=window_days, horizon_days=catalog.horizon_days)
             if catalog is not None and categories else CategorySpend({}))
    shared = session.sparkContext.broadcast((dict(champions), catalog, contacts, spend, categories, k, decision,
                                             uplift))

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        champs, cat, hist, sp, cats, top_k, dec, up = shared.value
        for batch in batches:
            if len(batch):
                yield tag(*score_chunk(batch, champs, cats, cat, sp, hist, top_k, dec, up))

    session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
    return df.mapInPandas(score_batches, schema=_tagged_schema())


def run_scoring_spark(session, snapshot_dir: Path, snapshot_info: dict, champions: Mapping[str, Champion],
                      catalog: Catalog | None, contacts: ContactHistory | None, as_of: date, root: Path, *,
                      window_days: int, k: int = 3, before_swap: Callable[[Path], None] | None = None,
                      timings: dict | None = None, decision: BatchDecision | None = None,
                      log_decisions: Callable[[pd.DataFrame], None] | None = None,
                      uplift: UpliftChampion | None = None) -> BatchResult:
    """Score the snapshot on Spark, reconcile, write the outputs aside and swap them in."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    timings = dict(timings or {})
    t0 = time.perf_counter()
    if root.exists():
        clean_abandoned(root)
    snapshot = session.read.parquet(str(snapshot_dir.resolve()))
    tagged = score_dataframe(snapshot, champions, catalog, contacts, k=k, window_days=window_days,
                             decision=decision, uplift=uplift).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        scores = (tagged.where(F.col("kind") == "scores").withColumn("as_of", F.lit(as_of))
                  .select(*SCORE_COLUMNS))
        cross_sell = tagged.where(F.col("kind") == "cross_sell").select("customer_id", "category", "probability")
        decided = decision is not None and catalog is not None
        offers = (tagged.where(F.col("kind") == "offers").withColumn("as_of", F.lit(as_of))
                  .select("customer_id", "as_of", *[c for c in OFFER_COLUMNS if c != "customer_id"],
                          *(OFFER_DECISION_COLUMNS if decided else ())))
        counts = _reconcile(snapshot, scores)
        timings["score_seconds"] = round(time.perf_counter() - t0, 3)
        prev_day = previous_scores_day(root, as_of)
        migration = _migration(session, root, prev_day, scores)
        if decided and log_decisions is not None:  # durable before the outputs are published
            columns = ["decision_id", "customer_id", "arm", "offer_id", "channel", "pscore", "policy_offer_id",
                       "offers"]
            rows = tagged.where(F.col("kind") == "decisions").select(*columns)
            log_decisions(spark_decisions(rows.toPandas(), decision))
        with staged_output(root, as_of, before_swap=before_swap) as staging:
            for name, frame in (("scores.parquet", scores), ("cross_sell.parquet", cross_sell),
                                ("offers.parquet", offers), ("segment_migration.parquet", migration.coalesce(1))):
                _write(frame, staging / name)
            manifest = base_manifest(as_of, dict(champions), missing_tasks(dict(champions)), snapshot_info, catalog,
                                     prev_day, rows_in=counts["in"], scored=counts["scored"],
                                     cross_sell_pairs=cross_sell.count(), offers=offers.count(),
                                     timings=timings, engine="spark", uplift=uplift)
            manifest = write_manifest(staging, manifest)
    finally:
        tagged.unpersist()
    return BatchResult(output_dir(root, as_of), manifest, None)


def spark_decisions(rows: pd.DataFrame, decision: BatchDecision) -> pd.DataFrame:
    """The decision rows executors produced, with the run's constant columns added."""
    import json

    models, catalog_version, snapshot_version = decision.versions
    return rows.assign(decided_us=decision.decided_us, model_versions=json.dumps(models, separators=(",", ":")),
                       catalog_version=catalog_version, snapshot_version=snapshot_version, source="batch",
                       released=0)


def _reconcile(snapshot, scores) -> dict:
    """Every snapshot customer scored exactly once, counted by Spark."""
    from pyspark.sql import functions as F

    ids_in = snapshot.select(F.col("customer_id").cast("string").alias("customer_id"))
    ids_out = scores.select("customer_id")
    n_in, n_out = ids_in.count(), ids_out.count()
    distinct_out = ids_out.distinct().count()
    missing = ids_in.join(ids_out, "customer_id", "left_anti").count()
    extra = ids_out.join(ids_in, "customer_id", "left_anti").count()
    check_reconciliation(n_in=n_in, n_out=n_out, missing=missing, extra=extra, dupes=n_out - distinct_out)
    return {"in": n_in, "scored": n_out}


def _migration(session, root: Path, prev_day: date | None, scores):
    """``batch.score.segment_migration`` as a Spark aggregation."""
    from pyspark.sql import functions as F

    now = scores.select("customer_id", F.col("rfm_segment").alias("to_segment"))
    if prev_day is None:
        before = session.createDataFrame([], "customer_id string, from_segment string")
    else:
        before = (session.read.parquet(str((output_dir(root, prev_day) / "scores.parquet").resolve()))
                  .select(F.col("customer_id").cast("string"), F.col("rfm_segment").alias("from_segment")))
    both = before.join(now, "customer_id", "full_outer").fillna("(none)", subset=["from_segment", "to_segment"])
    return (both.groupBy("from_segment", "to_segment").agg(F.count(F.lit(1)).cast("long").alias("customers"))
            .orderBy("from_segment", "to_segment"))


def _write(frame, path: Path) -> None:
    # absolute: the JVM resolves relative paths against its own working directory
    frame.write.option("compression", "snappy").parquet(str(path.resolve()))
    drop_spark_bookkeeping(path)

