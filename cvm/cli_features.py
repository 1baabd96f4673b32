"""``cvm synth``, ``cvm sources``, ``cvm profiles`` and ``cvm features``: data in, snapshots out.

Each command parses its options and calls one function of a lower layer (``sources``,
``profiles``, ``features``); heavy imports happen inside the commands, so ``cvm --help``
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cvm.common import (
    AsOfOpt,
    ConfigDatasetOpt,
    ConfigOpt,
    DatasetOpt,
    EngineOpt,
    HomeOpt,
    MasterOpt,
    UserError,
    as_of_date,
    command,
    console,
    count_progress,
    err,
    fail,
    group,
    home_of,
    run,
    step_progress,
)
from cvm.output import print_build, print_stats

features_app = group("Build, inspect and publish point-in-time feature snapshots.")
profiles_app = group("Identity resolution: golden customer records.")
sources_app = group("Check a dataset against the source contract.")


def _dataset_spec(dataset: str | None, cfg) -> str:
    """--dataset, else the config's ``dataset``."""
    spec = dataset or cfg.dataset
    if not spec:
        raise UserError("no dataset: pass --dataset DIR|completejourney (or set `dataset:` in --config)")
    return spec


def synth(
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Number of persons to simulate.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the dataset into (new or a previous "
                                      "synth output).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="parquet (typed) or csv (text, with text-level defects).")]
    = "parquet",
) -> None:
    """Generate a reproducible synthetic dataset (2024-01-01..2025-12-31) with its ground truth in truth/."""
    from sources.synth import generate

    if fmt not in ("parquet", "csv"):
        fail(f"--format {fmt!r}: choose parquet or csv")

    def go():
        with count_progress("synth", "persons") as bar:
            return generate(out, customers, seed, fmt=fmt, progress=bar)

    summary = run(go, ValueError)  # the generator refuses bad arguments and foreign directories
    table = Table(title=f"synthetic dataset {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        table.add_row(name, f"{n:,}")
    console.print(table)


def build(dataset: str | None, as_of: str, *, engine: str = "duckdb", spark_master: str | None = None,
          out: Path | None = None, config: Path | None = None, category_column: str | None = None,
          publish: bool = False, replace_schema: bool = False, home: Path | None = None):
    """``cvm features build`` as a call (the demo runs it too): returns what was built."""
    from features.pipeline import build_steps
    from features.publish import build_and_publish
    from sources.dataset import resolve_dataset
    from training.experiment import load_config

    day = as_of_date(as_of)
    cfg = load_config(config)
    h = home_of(home)
    ds = resolve_dataset(_dataset_spec(dataset, cfg), h, progress=True)
    with step_progress(f"features {ds.name} as_of {day} ({engine})", len(build_steps(ds))) as advance:
        return build_and_publish(ds, day, h, config=cfg, engine=engine, spark_master=spark_master, out=out,
                                 category_column=category_column, publish=publish, replace_schema=replace_schema,
                                 step=advance)


@command(features_app, "build")
def features_build(
    as_of: AsOfOpt,
    dataset: ConfigDatasetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Root directory for snapshots (default "
                                                "$CVM_HOME/features/<dataset>).")] = None,
    engine: EngineOpt = "duckdb",
    spark_master: MasterOpt = None,
    config: ConfigOpt = None,
    category_column: Annotated[str | None, typer.Option("--category-column", help="Products column used as "
                                                           "category (e.g. product_category for completejourney).")]
    = None,
    publish: Annotated[bool, typer.Option("--publish", help="Also publish the snapshot to the online store.")] = False,
    replace_schema: Annotated[bool, typer.Option("--replace-schema", help="Accept a changed feature set: deletes "
                                                 "older snapshots under the root.")] = False,
    home: HomeOpt = None,
) -> None:
    """Build the point-in-time feature snapshot of every customer with an order before --as-of."""
    built = run(lambda: build(dataset, as_of, engine=engine, spark_master=spark_master, out=out, config=config,
                              category_column=category_column, publish=publish, replace_schema=replace_schema,
                              home=home))
    print_build(built.result, built.published)


@command(features_app, "publish")
def features_publish(dataset: DatasetOpt, as_of: AsOfOpt, home: HomeOpt = None) -> None:
    """Make the snapshot of --as-of the one the serving layer reads (atomic switch), with its contact history."""
    from features.publish import publish_built

    day = as_of_date(as_of)
    with err.status("publishing to the online store"):
        snap = run(lambda: publish_built(home_of(home), dataset, day))
    console.print(f"published {dataset} as_of {day}: {snap.rows:,} customers (version {snap.version})")


@command(features_app, "lookup")
def features_lookup(dataset: DatasetOpt, customer_id: Annotated[str, typer.Argument(help="Customer id.")],
                    home: HomeOpt = None) -> None:
    """Print one customer's published feature vector from the online store."""
    from features.online import open_online_store
    from sources.dataset import dataset_name

    def go():
        with open_online_store(home_of(home), dataset_name(dataset)) as store:
            return store.get(customer_id)

    row = run(go)
    if row is None:
        fail(f"customer {customer_id!r} is not in the published snapshot")
    t = Table(title=f"customer {customer_id}")
    t.add_column("feature")
    t.add_column("value", justify="right")
    for k, v in row.items():
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(t)


@command(features_app, "schema")
def features_schema(dataset: DatasetOpt, home: HomeOpt = None) -> None:
    """Print the feature set of a dataset's snapshots: names, dtypes and meaning."""
    from features.snapshot import read_schema
    from sources.dataset import dataset_name

    name = run(lambda: dataset_name(dataset))
    schema = read_schema(home_of(home).features(name))
    if schema is None:
        fail(f"no snapshot built for {name} yet: run `cvm features build --dataset {dataset} --as-of DATE`")
    t = Table(title=f"feature set {schema['fingerprint']} of {name}")
    for col in ("#", "name", "dtype", "group", "meaning"):
        t.add_column(col)
    for i, c in enumerate(schema["columns"]):
        t.add_row(str(i), c["name"], c["dtype"], c["group"], c["description"])
    console.print(t)


@command(sources_app, "check")
def sources_check(dataset: ConfigDatasetOpt = None, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Validate every table against the contract (columns, types); bad rows are counted and quarantined."""
    from sources.dataset import resolve_dataset
    from sources.load import check_sources
    from training.experiment import load_config

    def go():
        h = home_of(home)
        cfg = load_config(config)
        ds = resolve_dataset(_dataset_spec(dataset, cfg), h, progress=True)
        return ds, check_sources(ds, h, validation=cfg.validation)

    ds, (reports, qdir) = run(go)
    t = Table(title=f"{ds.name}: source contract check")
    for col in ("table", "format", "files", "rows in", "used", "quarantined", "reasons"):
        t.add_column(col)
    for name, rep in reports.items():
        tf = ds.tables[name]
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(rep.quarantined.items())) or "-"
        t.add_row(name, tf.fmt, str(len(tf.files)), f"{rep.rows_in:,}", f"{rep.rows_clean:,}",
                  f"{rep.rows_quarantined:,}", reasons)
    console.print(t)
    if sum(r.rows_quarantined for r in reports.values()):
        console.print(f"quarantined rows (raw values and reason): {qdir}")


@command(profiles_app, "build")
def profiles_build(dataset: ConfigDatasetOpt = None,
                   as_of: Annotated[str | None, typer.Option("--as-of", help="Use only identities seen before "
                                                                "this date.")] = None,
                   config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Link source records into golden customer profiles (written under $CVM_HOME/profiles)."""
    from profiles.jobs import build_profiles
    from sources.dataset import resolve_dataset
    from training.experiment import load_config

    day = as_of_date(as_of) if as_of else None

    def go():
        h = home_of(home)
        cfg = load_config(config)
        ds = resolve_dataset(_dataset_spec(dataset, cfg), h)
        with err.status("resolving identities"):
            return build_profiles(ds, h, day, cfg.profiles, validation=cfg.validation)

    stats, where = run(go)
    print_stats("identity resolution", stats)
    console.print(f"profiles written to {where}")


def linkage(dataset: str | None, truth: Path | None, config: Path | None, home: Path | None) -> dict:
    """``cvm profiles evaluate`` as a call (the demo runs it too)."""
    from profiles.jobs import evaluate_linkage
    from sources.dataset import resolve_dataset
    from training.experiment import load_config

    h = home_of(home)
    cfg = load_config(config)
    ds = resolve_dataset(_dataset_spec(dataset, cfg), h)
    with err.status("resolving identities"):
        return evaluate_linkage(ds, h, truth, cfg.profiles, validation=cfg.validation)


@command(profiles_app, "evaluate")
def profiles_evaluate(dataset: ConfigDatasetOpt = None,
                      truth: Annotated[Path | None, typer.Option("--truth", help="records.parquet with "
                                                                    "(source_system, source_id, person_id); default "
                                                                    "<dataset>/truth/records.parquet.")] = None,
                      config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Measure linkage precision and recall against a ground truth (the synthetic generator writes one)."""
    print_stats("linkage quality (pairwise, against ground truth)", run(lambda: linkage(dataset, truth, config, home)))
