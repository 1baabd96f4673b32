"""``cvm score-batch``: the nightly rescoring of every customer (``batch.nightly``).

Exit codes for schedulers (cron, Airflow): 0 done (possibly with tasks missing a
champion, which the output says); 2 bad input or configuration (nothing written);
3 reconciliation failed (the previous output is left in place); 4 the output could not
be written (disk full, permissions; the previous output is left in place); 1 anything else.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from cvm.common import (
    CatalogOpt,
    HomeOpt,
    MasterOpt,
    as_of_date,
    count_progress,
    err,
    fail,
    home_of,
    quiet_mlflow,
    run,
    warn,
)
from cvm.output import print_batch


def nightly(day: date, *, dataset: str = "completejourney", out: Path | None = None, config: Path | None = None,
            catalog: Path | None = None, k: int = 3, publish: bool = True, home: Path | None = None,
            engine: str = "duckdb", spark_master: str | None = None, segments: Path | None = None):
    """The nightly job with its progress bar and warnings; exits with the scheduler's code
    on a failure the job classifies (``BatchError.exit_code``), 2 for bad input, 4 when the
    output cannot be written."""
    from batch.job import BatchError
    from batch.nightly import run_nightly
    from sources.dataset import dataset_name
    from training.experiment import dataset_config, load_config

    def go():
        path = config or dataset_config(dataset_name(dataset))
        cfg = load_config(path) if path is not None else None
        with count_progress("scoring", "customers") as bar:
            return run_nightly(day, home_of(home), dataset=dataset, out=out, config=cfg, catalog_path=catalog, k=k,
                               publish=publish, engine=engine, spark_master=spark_master,
                               say=lambda line: err.print(line, soft_wrap=True), progress=bar,
                               decisions_url=os.environ.get("CVM_DECISIONS_URL") or None, segments_path=segments)

    try:
        result = run(go)
    except BatchError as exc:
        fail(str(exc), exc.exit_code)
    for line in result.warnings:
        warn(line)
    return result


def score_batch(
    as_of: Annotated[str, typer.Option("--as-of", help="Scoring date (YYYY-MM-DD): features from data strictly "
                                       "before it.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset: a directory or a built-in name.")]
    = "completejourney",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output root; default "
                                                "$CVM_HOME/batch/<dataset>. Written to <out>/as_of=DATE/.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML for the feature "
                                                   "build (default: experiments/<dataset>.yaml when present).")]
    = None,
    catalog: CatalogOpt = None,
    k: Annotated[int, typer.Option("--k", min=1, max=20, help="Offers kept per customer.")] = 3,
    engine: Annotated[str, typer.Option("--engine", help="duckdb (embedded, default) or spark: features and "
                                        "scoring on Spark (pandas UDFs over the same boosters).")] = "duckdb",
    spark_master: MasterOpt = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the snapshot to the online "
                                          "store for the service after a successful run.")] = True,
    segments: Annotated[Path | None, typer.Option("--segments", help="Segment definitions YAML (default: the "
                                                  "dataset's segments.yaml, or the shipped file of a built-in "
                                                  "dataset); membership and sizes are written with the scores.",
                                                  dir_okay=False)] = None,
    home: HomeOpt = None,
) -> None:
    """Score every customer with the champion models and the next-best-offer engine, as of DATE.

    Builds the feature snapshot for DATE (or reuses it), scores it in chunks on the LightGBM
    boosters, checks that every customer was scored exactly once, writes scores, cross-sell
    pairs, offers, segment migration and a manifest aside and swaps them in atomically.

    Every customer is a decision: logged (arm, pscore, ranked offers) in the decision log
    before the outputs are swapped in (CVM_DECISIONS_URL, default SQLite under the home);
    the offers carry decision_id, arm and pscore, and control customers get none.
    """
    quiet_mlflow()
    day = as_of_date(as_of)
    print_batch(nightly(day, dataset=dataset, out=out, config=config, catalog=catalog, k=k, publish=publish,
                        home=home, engine=engine, spark_master=spark_master, segments=segments))
