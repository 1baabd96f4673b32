"""The ``cvm`` command: a thin layer over the pipeline functions.

Every subcommand has ``--help``; state goes under ``CVM_HOME`` (default ``./cvm_home``).
Errors a user can act on are printed as one line and exit with status 2; nothing here
holds logic that a test could not reach through the functions it calls.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cvm.cli_models import models_app  # light: MLflow is imported inside its commands
from cvm.cli_batch import score_batch  # light: the batch modules are imported inside the command
from cvm.cli_report import report  # light: plotly and the report modules are imported inside it
from cvm.cli_serve import bento, nbo_app, serve  # light: BentoML is imported inside its commands

app = typer.Typer(
    name="cvm",
    help="Customer Value Management scoring: features, models, scores and offers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
features_app = typer.Typer(help="Build, inspect and publish point-in-time feature snapshots.", no_args_is_help=True)
profiles_app = typer.Typer(help="Identity resolution: golden customer records.", no_args_is_help=True)
sources_app = typer.Typer(help="Check a dataset against the source contract.", no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(profiles_app, name="profiles")
app.add_typer(sources_app, name="sources")
app.add_typer(models_app, name="models")
app.add_typer(nbo_app, name="nbo")
app.command()(serve)
app.command()(bento)
app.command("score-batch")(score_batch)
app.command()(report)

console = Console(stderr=False)
err = Console(stderr=True)

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset directory (Parquet/CSV tables) or built-in name: completejourney.")]
ConfigDatasetOpt = Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset directory (Parquet/CSV tables) or built-in name: completejourney. Default: `dataset` of --config.")]
AsOfOpt = Annotated[str, typer.Option("--as-of", help="Snapshot date YYYY-MM-DD: only data strictly before 00:00 of this day is used.")]
EngineOpt = Annotated[str, typer.Option("--engine", help="duckdb (embedded, default) or spark.")]
MasterOpt = Annotated[Optional[str], typer.Option("--spark-master", help="Spark master URL (default local[*]).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Experiment YAML (sections: features, validation, profiles).")]
HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="State directory; default $CVM_HOME or ./cvm_home.", envvar="CVM_HOME")]


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(f"--as-of {value!r} is not a date (expected YYYY-MM-DD)") from None


_LOG_HANDLER: logging.Handler | None = None


def _setup(verbose: bool) -> None:
    # Summaries are printed as tables; logs are for warnings (quarantined rows...) unless -v.
    # Our handler writes to the current stderr, also when the CLI runs more than once in a
    # process (the previous one is replaced); other handlers on the root logger are kept.
    global _LOG_HANDLER
    root = logging.getLogger()
    if _LOG_HANDLER is not None:
        root.removeHandler(_LOG_HANDLER)
    _LOG_HANDLER = logging.StreamHandler(sys.stderr)
    _LOG_HANDLER.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(_LOG_HANDLER)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("py4j", "pyspark", "numexpr", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow logs every table migration and registration at INFO: the summaries say it already.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")


def _run(fn):
    """Turn the errors a user can act on into one clear line and exit status 2."""
    from cvm.config import ConfigError
    from features.online_store import OnlineStoreError
    from features.snapshot import EmptySnapshotError, SchemaMismatchError
    from sources.dataset import DatasetError

    try:
        return fn()
    except (UserError, DatasetError, ConfigError, SchemaMismatchError, EmptySnapshotError, FileNotFoundError,
            OnlineStoreError) as exc:
        _error(exc)


def _error(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2)


def _dataset_spec(dataset: str | None, cfg) -> str:
    """--dataset, else the config's ``dataset``."""
    spec = dataset or cfg.dataset
    if not spec:
        raise UserError("no dataset: pass --dataset DIR|completejourney (or set `dataset:` in --config)")
    return spec


def _home(home: Path | None):
    from cvm.home import Home

    return Home.from_env(home)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO), not only warnings.")] = False) -> None:
    """Customer Value Management scoring service."""
    _setup(verbose)


# --------------------------------------------------------------------------- synth
@app.command()
def synth(
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Number of persons to simulate.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the dataset into (new or a previous synth output).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="parquet (typed) or csv (text, with text-level defects).")] = "parquet",
) -> None:
    """Generate a reproducible synthetic dataset (2024-01-01..2025-12-31) with ground truth in truth/."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sources.synth import generate

    def go():
        if fmt not in ("parquet", "csv"):
            raise UserError(f"--format {fmt!r}: choose parquet or csv")
        with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("persons"),
                      TimeElapsedColumn(), console=err, transient=False) as bar:
            task = bar.add_task("synth", total=customers)
            summary = generate(out, customers, seed, fmt=fmt,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
        table = Table(title=f"synthetic dataset {out}")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name, n in summary.rows.items():
            table.add_row(name, f"{n:,}")
        console.print(table)

    try:
        _run(go)
    except ValueError as exc:  # the generator refuses bad arguments and foreign directories
        _error(exc)


# ------------------------------------------------------------------------ features
def _print_build(result, published=None) -> None:
    import pyarrow.dataset as pads

    t = Table(title=f"sources of {result.dataset}")
    for col in ("table", "rows in", "used", "quarantined", "reasons"):
        t.add_column(col, justify="right" if col not in ("table", "reasons") else "left")
    for name, rep in result.sources.items():
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(rep["quarantined_by_reason"].items())) or "-"
        t.add_row(name, f"{rep['rows_in']:,}", f"{rep['rows_clean']:,}", f"{rep['rows_quarantined']:,}", reasons)
    console.print(t)
    if result.profiles:
        p = result.profiles
        hubs = p.get("hub_identifiers", {}).get("total", 0)
        console.print(f"identity resolution: {p['records']:,} source records -> {p['profiles']:,} customer "
                      f"profiles; {hubs:,} hub identifiers (shared by too many records) not used to link")
    df = pads.dataset(str(result.path)).to_table(
        columns=["recency_days", "frequency", "monetary", "rfm_segment"]).to_pandas()
    s = Table(title=f"feature snapshot as_of {result.as_of} ({result.engine})")
    s.add_column("measure")
    s.add_column("value", justify="right")
    s.add_row("customers", f"{result.rows:,}")
    s.add_row("features", f"{len(result.feature_set.model_features)} (+ customer_id, as_of)")
    s.add_row("feature set", result.feature_set.fingerprint())
    s.add_row("median recency (days)", f"{df.recency_days.median():.0f}")
    s.add_row("median frequency (orders / 365 d)", f"{df.frequency.median():.0f}")
    s.add_row("monetary, total (365 d)", f"{df.monetary.sum():,.2f}")
    s.add_row("rows quarantined", f"{result.rows_quarantined:,}")
    for step, secs in result.timings.items():
        s.add_row(f"time: {step}", f"{secs:.2f} s")
    if published is not None:
        s.add_row("published (online store)", f"version {published.version}")
    console.print(s)
    seg = df.rfm_segment.value_counts()
    g = Table(title="RFM segments")
    g.add_column("segment")
    g.add_column("customers", justify="right")
    g.add_column("share", justify="right")
    for name, n in seg.items():
        g.add_row(str(name), f"{n:,}", f"{n / len(df):.1%}")
    console.print(g)
    console.print(f"snapshot written to {result.path}")


def build_and_maybe_publish(dataset: str | None, as_of: str, engine: str = "duckdb", spark_master: str | None = None,
                            out: Path | None = None, config: Path | None = None, category_column: str | None = None,
                            publish: bool = False, replace_schema: bool = False, home: Path | None = None):
    from cvm.config import load_config
    from cvm.engines import open_engine
    from features.pipeline import build_snapshot, build_steps
    from sources.dataset import resolve_dataset

    if engine not in ("duckdb", "spark"):
        raise UserError(f"--engine {engine!r}: choose duckdb or spark")
    if publish and out is not None:
        raise UserError("--publish publishes the snapshot under CVM_HOME; it cannot be combined with --out")
    day = _parse_date(as_of)
    cfg = load_config(config)
    h = _home(home)
    ds = resolve_dataset(_dataset_spec(dataset, cfg), h, progress=True)
    eng = open_engine(engine, spark_master=spark_master, temp_dir=h.tmp(ensure=True))
    steps = build_steps(ds)
    with _step_progress(f"features {ds.name} as_of {day} ({engine})", len(steps)) as advance:
        result = build_snapshot(ds, day, eng, h, config=cfg.features, validation=cfg.validation,
                                profiles=cfg.profiles, out=out, category_column=category_column,
                                replace_schema=replace_schema, step=advance)
    published = _publish(h, ds.name, result.path, day) if publish else None
    eng.close()
    return result, published


@contextmanager
def _step_progress(title: str, total: int | None):
    """A progress bar over a pipeline's named steps (pulsing when their number is not known
    in advance); yields the callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(title, total=total)
        done = -1

        def advance(name: str) -> None:
            nonlocal done
            done += 1
            bar.update(task, completed=done, description=f"{title}: {name}")

        yield advance
        if total is not None:
            bar.update(task, completed=total)


def _publish(h, dataset: str, path: Path, day: date):
    from features.online_store import open_online_store
    from features.snapshot import read_metadata

    store = open_online_store(h, dataset)
    meta = read_metadata(path.parent, day)
    with err.status("publishing to the online store"):
        return store.publish(path, as_of=day, metadata={"fingerprint": meta.get("fingerprint"),
                                                         "dataset": dataset})


@features_app.command("build")
def features_build(
    as_of: AsOfOpt,
    dataset: ConfigDatasetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Root directory for snapshots (default $CVM_HOME/features/<dataset>).")] = None,
    engine: EngineOpt = "duckdb",
    spark_master: MasterOpt = None,
    config: ConfigOpt = None,
    category_column: Annotated[Optional[str], typer.Option("--category-column", help="Products column used as category (e.g. product_category for completejourney).")] = None,
    publish: Annotated[bool, typer.Option("--publish", help="Also publish the snapshot to the online store.")] = False,
    replace_schema: Annotated[bool, typer.Option("--replace-schema", help="Accept a changed feature set: deletes older snapshots under the root.")] = False,
    home: HomeOpt = None,
) -> None:
    """Build the point-in-time feature snapshot of every customer with an order before --as-of."""
    def go():
        result, published = build_and_maybe_publish(dataset, as_of, engine, spark_master, out, config,
                                                     category_column, publish, replace_schema, home)
        _print_build(result, published)

    _run(go)


@features_app.command("publish")
def features_publish(dataset: DatasetOpt, as_of: AsOfOpt, home: HomeOpt = None) -> None:
    """Make the snapshot of --as-of the one the serving layer reads (atomic switch)."""
    def go():
        from features.snapshot import partition_dir
        from sources.dataset import resolve_dataset

        h = _home(home)
        day = _parse_date(as_of)
        name = resolve_dataset(dataset, h).name
        path = partition_dir(h.features(name), day)
        if not path.exists():
            raise UserError(f"no snapshot for {name} as_of {day}: run `cvm features build --dataset {dataset} --as-of {day}` first")
        snap = _publish(h, name, path, day)
        console.print(f"published {name} as_of {day}: {snap.rows:,} customers (version {snap.version})")

    _run(go)


@features_app.command("lookup")
def features_lookup(dataset: DatasetOpt, customer_id: Annotated[str, typer.Argument(help="Customer id.")],
                    home: HomeOpt = None) -> None:
    """Print one customer's published feature vector from the online store."""
    def go():
        from features.online_store import open_online_store
        from sources.dataset import resolve_dataset

        h = _home(home)
        store = open_online_store(h, resolve_dataset(dataset, h).name)
        row = store.get(customer_id)
        if row is None:
            raise UserError(f"customer {customer_id!r} is not in the published snapshot")
        t = Table(title=f"customer {customer_id}")
        t.add_column("feature")
        t.add_column("value", justify="right")
        for k, v in row.items():
            t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        console.print(t)

    _run(go)


@features_app.command("schema")
def features_schema(dataset: DatasetOpt, home: HomeOpt = None) -> None:
    """Print the feature set of a dataset's snapshots: names, dtypes and meaning."""
    def go():
        from features.snapshot import read_schema
        from sources.dataset import resolve_dataset

        h = _home(home)
        name = resolve_dataset(dataset, h).name
        schema = read_schema(h.features(name))
        if schema is None:
            raise UserError(f"no snapshot built for {name} yet: run `cvm features build --dataset {dataset} --as-of DATE`")
        t = Table(title=f"feature set {schema['fingerprint']} of {name}")
        for col in ("#", "name", "dtype", "group", "meaning"):
            t.add_column(col)
        for i, c in enumerate(schema["columns"]):
            t.add_row(str(i), c["name"], c["dtype"], c["group"], c["description"])
        console.print(t)

    _run(go)


# ------------------------------------------------------------------------- sources
@sources_app.command("check")
def sources_check(dataset: ConfigDatasetOpt = None, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Validate every table: contract columns, types; bad rows counted and quarantined."""
    def go():
        from cvm.config import load_config
        from cvm.engines import open_engine
        from sources.dataset import resolve_dataset
        from sources.load import load_sources

        h = _home(home)
        cfg = load_config(config)
        ds = resolve_dataset(_dataset_spec(dataset, cfg), h, progress=True)
        eng = open_engine("duckdb", temp_dir=h.tmp(ensure=True))
        qdir = h.quarantine(ds.name, ensure=True)
        src = load_sources(ds, eng, validation=cfg.validation, quarantine_dir=qdir)
        t = Table(title=f"{ds.name}: source contract check")
        for col in ("table", "format", "files", "rows in", "used", "quarantined", "reasons"):
            t.add_column(col)
        for name, rep in src.reports.items():
            tf = ds.tables[name]
            reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(rep.quarantined.items())) or "-"
            t.add_row(name, tf.fmt, str(len(tf.files)), f"{rep.rows_in:,}", f"{rep.rows_clean:,}",
                      f"{rep.rows_quarantined:,}", reasons)
        console.print(t)
        if src.rows_quarantined:
            console.print(f"quarantined rows (raw values and reason): {qdir}")

    _run(go)


# ------------------------------------------------------------------------ profiles
@profiles_app.command("build")
def profiles_build(dataset: ConfigDatasetOpt = None,
                   as_of: Annotated[Optional[str], typer.Option("--as-of", help="Use only identities seen before this date.")] = None,
                   config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Link source records into golden customer profiles (written under $CVM_HOME/profiles)."""
    def go():
        from cvm.config import load_config
        from cvm.engines import open_engine
        from features.pipeline import linked_tables
        from sources.dataset import resolve_dataset
        from sources.load import load_sources

        h = _home(home)
        cfg = load_config(config)
        ds = resolve_dataset(_dataset_spec(dataset, cfg), h)
        if not ds.has("identities"):
            raise UserError(f"dataset {ds.name} has no identities table: its customer ids are used as they are")
        eng = open_engine("duckdb", temp_dir=h.tmp(ensure=True))
        src = load_sources(ds, eng, validation=cfg.validation, tables=("identities", "customers"))
        day = _parse_date(as_of) if as_of else None
        with err.status("resolving identities"):
            _, stats = linked_tables(src, day, h, cfg.profiles, golden=True)
        _print_stats("identity resolution", stats)
        console.print(f"profiles written to {h.profiles(ds.name)}")

    _run(go)


def _linkage_quality(dataset: str | None, truth: Path | None, config: Path | None, home: Path | None) -> dict:
    import pandas as pd

    from cvm.config import load_config
    from cvm.engines import open_engine
    from profiles.evaluate import linkage_quality
    from profiles.resolve import resolve_identities
    from sources.dataset import resolve_dataset
    from sources.load import load_sources

    h = _home(home)
    cfg = load_config(config)
    ds = resolve_dataset(_dataset_spec(dataset, cfg), h)
    path = truth or ds.root / "truth" / "records.parquet"
    if not path.exists():
        raise UserError(f"no ground truth at {path}: pass --truth")
    if not ds.has("identities"):
        raise UserError(f"dataset {ds.name} has no identities table")
    eng = open_engine("duckdb", temp_dir=h.tmp(ensure=True))
    src = load_sources(ds, eng, validation=cfg.validation, tables=("identities",))
    with err.status("resolving identities"):
        resolution = resolve_identities(eng.execute(src["identities"]), cfg.profiles)
    return linkage_quality(resolution.mapping, pd.read_parquet(path))


@profiles_app.command("evaluate")
def profiles_evaluate(dataset: ConfigDatasetOpt = None,
                      truth: Annotated[Optional[Path], typer.Option("--truth", help="records.parquet with (source_system, source_id, person_id); default <dataset>/truth/records.parquet.")] = None,
                      config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Measure linkage precision and recall against a ground truth (the synthetic generator writes one)."""
    _run(lambda: _print_stats("linkage quality (pairwise, against ground truth)",
                              _linkage_quality(dataset, truth, config, home)))


def _print_stats(title: str, stats: dict) -> None:
    t = Table(title=title)
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in stats.items():
        if isinstance(v, float):
            t.add_row(k, f"{v:.4f}")
        elif isinstance(v, int):
            t.add_row(k, f"{v:,}")
        else:
            t.add_row(k, str(v))
    console.print(t)


# --------------------------------------------------------------------------- train
def _task_config(task: str, config: Path | None, experiments: Path):
    """``experiments/<task>.yaml`` (training settings; its ``extends`` gives the dataset's
    sections) over --config when given; returns the config and its effective YAML."""
    import yaml

    from cvm.config import load_config

    task_file = experiments / f"{task}.yaml"
    path = task_file if task_file.exists() else None
    cfg = load_config(path, base=config)
    sources = ", ".join(str(p) for p in (config, path) if p is not None) or "defaults"
    text = f"# effective configuration of `cvm train {task}` (from {sources})\n" + yaml.safe_dump(
        cfg.model_dump(mode="json"), sort_keys=False)
    return cfg, text


def train_tasks(tasks: list[str], dataset: str | None, as_of: str, *, horizon_days: int | None = None,
                trials: int | None = None, config: Path | None = None, experiments: Path = Path("experiments"),
                home: Path | None = None) -> tuple[list, list[str]]:
    """Train each task; returns the results and the tasks skipped because --as-of is too early."""
    from cvm.engines import open_engine
    from sources.dataset import resolve_dataset
    from training.dataset import TaskUnavailableError
    from training.origins import InsufficientHistoryError
    from training.pipeline import train_task

    day = _parse_date(as_of)
    h = _home(home)
    results = []
    engine = open_engine("duckdb", temp_dir=h.tmp(ensure=True))
    too_early: list[str] = []
    for task in tasks:
        cfg, text = _task_config(task, config, experiments)
        ds = resolve_dataset(_dataset_spec(dataset, cfg), h, progress=True)
        with _step_progress(f"train {task} as_of {day}", None) as advance:
            try:
                result = train_task(task, ds, day, engine, h, cfg, cfg.train, horizon_days=horizon_days,
                                    trials=trials, config_text=text, step=advance)
            except TaskUnavailableError as exc:  # the data cannot support the task: not an error
                err.print(f"[yellow]skipped {task}:[/] {escape(str(exc))}", soft_wrap=True)
                continue
            except InsufficientHistoryError as exc:  # the as_of asked for is too early: the user's to fix
                err.print(f"[yellow]skipped {task}:[/] {escape(str(exc))}", soft_wrap=True)
                too_early.append(task)
                continue
        results.append(result)
    return results, too_early


def _print_training(results) -> None:
    """One table per task: the model's test metrics next to every baseline's."""
    for r in results:
        judged = [m for m in (r.primary, "test_orders_mae") if m in r.metrics]
        shown = [m for m in (r.primary, "test_auc", "test_pr_auc", "test_brier", "test_ece", "test_lift_at_10pct",
                             "test_mae", "test_rmse", "test_orders_mae", "test_orders_rmse")
                 if m in r.metrics or any(m in row for row in r.baselines.values())]
        shown = list(dict.fromkeys(shown))
        reg = (f"v{r.registration.version} " + ("champion" if r.registration.promoted else "challenger")
               if r.registration else "not registered")
        t = Table(title=f"{r.task}: as_of {r.as_of}, horizon {r.horizon_days} d, rows train/valid/test "
                        f"{r.rows['train']:,}/{r.rows['valid']:,}/{r.rows['test']:,}, "
                        f"{r.timings.get('total', 0):.0f} s, {reg}", title_justify="left")
        t.add_column("test metric")
        t.add_column("model", justify="right")
        names = list(r.baselines)
        for name in names:
            t.add_column(name, justify="right")
        for m in shown:
            label = m.removeprefix("test_") + (" *" if m in judged else "")
            cells = [r.metrics.get(m)] + [r.baselines[n].get(m) for n in names]
            t.add_row(label, *["" if v is None or v != v else f"{v:.4f}" for v in cells])
        console.print(t)
        verdict = "[green]beats every baseline[/]" if r.beats_all_baselines else "[red]does NOT beat every baseline[/]"
        console.print(f"  * judged metric; model {verdict}; MLflow run {r.run_id}")
        for s in r.shortfalls:
            console.print(f"  [red]shortfall[/] {escape(s)}")
        if r.registration:
            console.print(f"  registry: {escape(r.registration.reason)}")


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="churn, next-purchase, cross-sell, clv or all.")],
    as_of: AsOfOpt,
    dataset: ConfigDatasetOpt = None,
    horizon_days: Annotated[Optional[int], typer.Option("--horizon-days", min=1, help="Label window H (default: per task, from the config).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Optuna trials (default: the config's budget).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Dataset-level experiment YAML (features, validation, profiles) under the task's training settings; default: what experiments/<task>.yaml extends.")] = None,
    experiments: Annotated[Path, typer.Option("--experiments", help="Folder of per-task experiment YAMLs.")] = Path("experiments"),
    home: HomeOpt = None,
) -> None:
    """Train, evaluate against baselines, log to MLflow and register, as if today were --as-of.

    Only data strictly before --as-of is read: the test snapshot is the latest whose label
    window ends by --as-of, validation precedes it, training snapshots precede validation."""
    from training.config import TASKS

    def go():
        if task != "all" and task not in TASKS:
            raise UserError(f"unknown task {task!r}: choose {', '.join(TASKS)} or all")
        results, too_early = train_tasks(list(TASKS) if task == "all" else [task], dataset, as_of,
                                         horizon_days=horizon_days, trials=trials, config=config,
                                         experiments=experiments, home=home)
        if results:
            _print_training(results)
        if too_early:
            raise UserError(f"not enough history before --as-of {as_of} for: {', '.join(too_early)}")

    _run(go)


# ---------------------------------------------------------------------------- demo
@app.command()
def demo(
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot and training date on Complete Journey (data covers 2017).")] = "2017-11-01",
    synthetic_customers: Annotated[int, typer.Option("--synthetic-customers", min=0, help="Persons in the synthetic part (0 skips it).")] = 20_000,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Optuna trials per model (default: experiments/<task>.yaml, 30).")] = None,
    home: HomeOpt = None,
) -> None:
    """The main job end to end: features on Complete Journey (real data), published and looked up;
    the four models trained as of that date, judged against their baselines and registered in
    MLflow; then a synthetic dataset with messy identities: golden records, features, linkage quality."""
    def go():
        import pyarrow.dataset as pads

        from features.online_store import open_online_store

        experiments = Path("experiments")
        config = experiments / "completejourney.yaml"
        console.rule("[bold]1. Complete Journey (Dunnhumby, real data): point-in-time features")
        result, published = build_and_maybe_publish("completejourney", as_of, publish=True,
                                                     config=config if config.exists() else None,
                                                     replace_schema=True, home=home)
        _print_build(result, published)
        store = open_online_store(_home(home), result.dataset)
        first = pads.dataset(str(result.path)).to_table(columns=["customer_id"]).column(0)[0].as_py()
        row = store.get(first)
        console.print(f"online store lookup of customer {first}: segment {row['rfm_segment']}, "
                      f"recency {row['recency_days']} d, frequency {row['frequency']}, monetary {row['monetary']:.2f}")
        from training.config import TASKS

        console.rule(f"[bold]2. Training as if today were {as_of}: churn, next-purchase, cross-sell, clv")
        results, too_early = train_tasks(list(TASKS), "completejourney", as_of, trials=trials,
                                         experiments=experiments, home=home)
        _print_training(results)
        if too_early:
            raise UserError(f"not enough history before --as-of {as_of} for: {', '.join(too_early)}")
        console.rule("[bold]3. Next-best offers (offline, on the 28 days after as_of) and the scoring service")
        from cvm.cli_serve import demo_service, print_nbo_table
        from serving.evaluate import evaluate_and_log

        print_nbo_table(evaluate_and_log("completejourney", date.fromisoformat(as_of), None, 28, 0, home),
                        "completejourney", as_of, 28)
        demo_service(_home(home).root, "completejourney", first)
        console.rule("[bold]4. The nightly batch (four weeks apart, for segment migration) and the CVM report")
        from cvm.cli_batch import _run as run_batch
        from cvm.cli_report import write_report

        day = date.fromisoformat(as_of)
        for batch_day, publish in ((day - timedelta(days=28), False), (day, True)):
            code = run_batch(batch_day, "completejourney", None, config if config.exists() else None, None, 3,
                             publish, home)
            if code:
                raise UserError(f"cvm score-batch --as-of {batch_day} failed (exit {code})")
        h = _home(home)
        report_path = h.root / "reports" / f"completejourney-{as_of}.html"
        inputs, size = write_report(h, "completejourney", day,
                                    h.batch("completejourney") / f"as_of={as_of}", report_path)
        console.print(f"CVM report: {report_path} ({size / 1e6:.1f} MB, {len(inputs.cards)} model cards); "
                      "open it in a browser (works offline)")
        if synthetic_customers:
            from sources.synth import generate

            console.rule(f"[bold]5. Synthetic data, {synthetic_customers:,} persons with messy identities")
            out = _home(home).datasets(ensure=True) / "synthetic-demo"
            with err.status("generating"):
                generate(out, synthetic_customers, seed=0)
            result, _ = build_and_maybe_publish(str(out), "2025-07-01", replace_schema=True, home=home)
            _print_build(result)
            _print_stats("identity resolution against the generator's ground truth (pairwise)",
                         {k: v for k, v in _linkage_quality(str(out), None, None, home).items()
                          if k in ("precision", "recall", "f1", "true_persons", "predicted_profiles",
                                   "persons_split", "profiles_merging_persons")})
        console.print("next: `cvm features schema --dataset completejourney` lists every feature; "
                      "`cvm models list` the registered models; `mlflow ui --backend-store-uri "
                      "sqlite:///cvm_home/mlflow/mlflow.db` the runs; `cvm --help` the commands.")

    _run(go)


if __name__ == "__main__":  # pragma: no cover
    app()
