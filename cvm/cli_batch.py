"""``cvm score-batch``: the nightly rescoring of every customer.

Exit codes for schedulers (cron, Airflow): 0 done (possibly with tasks missing a
champion, which the output says); 2 bad input or configuration (nothing written);
3 reconciliation failed (the previous output is left in place); 4 the output could not
be written (disk full, permissions; the previous output is left in place); 1 anything else.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)
#: errors of writing the output (exit 4): disk full, quota, read-only, permissions, I/O
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def command_date(as_of: str) -> date:
    """The --as-of of a scheduled command (exit 2 if it is not a date), with MLflow quiet:
    its telemetry off and its INFO chatter out of a scheduler's log."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        return date.fromisoformat(as_of)
    except ValueError:
        err.print(f"[red]error:[/red] --as-of {as_of!r} is not a date (YYYY-MM-DD)")
        raise typer.Exit(2) from None


def score_batch(
    as_of: Annotated[str, typer.Option("--as-of", help="Scoring date (YYYY-MM-DD): features from data strictly "
                                       "before it.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset: a directory or a built-in name.")]
    = "completejourney",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output root; default "
                                                "$CVM_HOME/batch/<dataset>. Written to <out>/as_of=DATE/.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Experiment YAML for the feature "
                                                   "build (default: experiments/<dataset>.yaml when present).")]
    = None,
    catalog: Annotated[Optional[Path], typer.Option("--catalog", help="Offer catalog YAML (default "
                                                    "serving/catalogs/<dataset>.yaml).")] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=20, help="Offers kept per customer.")] = 3,
    engine: Annotated[str, typer.Option("--engine", help="duckdb (embedded, default) or spark: features and "
                                        "scoring on Spark (pandas UDFs over the same boosters).")] = "duckdb",
    spark_master: Annotated[Optional[str], typer.Option("--spark-master", help="Spark master URL for --engine "
                                                        "spark (default local[*]).")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the snapshot to the online "
                                          "store for the service after a successful run.")] = True,
    home: Annotated[Optional[Path], typer.Option("--home", help="State directory; default $CVM_HOME or "
                                                 "./cvm_home.", envvar="CVM_HOME")] = None,
) -> None:
    """Score every customer with the champion models and the next-best-offer engine, as of DATE.

    Builds the feature snapshot for DATE (or reuses it), scores it in chunks on the LightGBM
    boosters, checks that every customer was scored exactly once, writes scores, cross-sell
    pairs, offers, segment migration and a manifest aside and swaps them in atomically.
    """
    from batch.job import BatchError

    day = command_date(as_of)
    if engine not in ("duckdb", "spark"):
        err.print(f"[red]error:[/red] --engine {engine!r}: choose duckdb or spark")
        raise typer.Exit(2)
    if spark_master and engine != "spark":
        err.print("[red]error:[/red] --spark-master needs --engine spark")
        raise typer.Exit(2)
    try:
        code = _run(day, dataset, out, config, catalog, k, publish, home, engine, spark_master)
    except BatchError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        err.print(f"[red]error:[/red] writing the batch output failed: {exc}. Nothing was swapped in: the "
                  "previous output is left in place. Free space (or fix permissions) and run again.")
        raise typer.Exit(4) from None
    raise typer.Exit(code)


def _run(day: date, dataset: str, out: Optional[Path], config: Optional[Path], catalog_path: Optional[Path], k: int,
         publish: bool, home: Optional[Path], engine: str = "duckdb", spark_master: Optional[str] = None) -> int:
    import pandas as pd
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from batch.job import parquet_rows, run_scoring
    from cvm.cli import UserError, build_and_maybe_publish, _publish
    from cvm.home import Home
    from features.snapshot import read_metadata
    from serving.catalog import CatalogError, default_catalog_path, load_catalog
    from serving.engine import NotReadyError, load_contacts
    from serving.loader import RegistrySource
    from sources.dataset import DatasetError, resolve_dataset

    t0 = time.perf_counter()
    h = Home.from_env(home)
    try:
        ds = resolve_dataset(dataset, h)
    except DatasetError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    snap_dir = h.features(ds.name) / f"as_of={day.isoformat()}"
    if config is None and Path("experiments", f"{ds.name}.yaml").exists():
        config = Path("experiments", f"{ds.name}.yaml")
    if snap_dir.exists():
        console.print(f"reusing the feature snapshot {snap_dir}")
    else:
        try:
            build_and_maybe_publish(dataset, day.isoformat(), engine, spark_master, config=config, home=home)
        except (UserError, DatasetError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            return 2
    t_features = time.perf_counter() - t0
    src = RegistrySource(h.mlflow_tracking_uri())
    try:
        versions = src.versions()
    except NotReadyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    champions = {t: src.load(t, v) for t, v in versions.items()}
    categories = list(champions["cross-sell"].model.categories) if "cross-sell" in champions else []
    path = catalog_path or default_catalog_path(ds.name)
    catalog = None
    if path.exists() or catalog_path is not None:
        try:
            catalog = load_catalog(path, categories)
        except CatalogError as exc:
            err.print(f"[red]error:[/red] {exc}")
            return 2
    else:
        err.print(f"[yellow]no offer catalog at {path}: offers are left empty[/yellow]")
    meta = read_metadata(snap_dir.parent, day)
    quarantined = sum(int(t.get("rows_quarantined", 0)) for t in (meta.get("sources") or {}).values()
                      if isinstance(t, dict))
    info = {"path": str(snap_dir), "rows": parquet_rows(snap_dir), "feature_set_fingerprint": meta.get("fingerprint"),
            "built_at": meta.get("built_at"), "rows_quarantined": quarantined}
    contacts = load_contacts(h, dataset, day, engine, spark_master)
    root = out or h.batch(ds.name)
    timings = {"features_seconds": round(t_features, 3)}
    if engine == "spark":
        from batch.spark_job import run_scoring_spark
        from cvm.engines import open_engine

        session = open_engine("spark", spark_master=spark_master).session
        with err.status(f"scoring {info['rows']:,} customers on Spark ({session.sparkContext.master})"):
            result = run_scoring_spark(session, snap_dir, info, champions, catalog, contacts, day, root, k=k,
                                       timings=timings)
    else:
        snapshot = pd.read_parquet(snap_dir)
        with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                      transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("scoring", total=len(snapshot))
            result = run_scoring(snapshot, info, champions, catalog, contacts, day, root, k=k,
                                 progress=lambda n: bar.advance(task, n), timings=timings)
    if publish:
        _publish(h, ds.name, snap_dir, day)
    m = result.manifest
    for task_name in m["missing_tasks"]:
        err.print(f"[yellow]no champion for {task_name}: its columns are null[/yellow]")
    console.print(f"scored {m['rows']['scored']:,} of {m['rows']['in']:,} customers as of {day} "
                  f"({m['rows']['cross_sell_pairs']:,} cross-sell pairs, {m['rows']['offers']:,} offers) "
                  f"in {time.perf_counter() - t0:.1f} s (features {t_features:.1f} s); output {result.out_dir}")
    return 0

