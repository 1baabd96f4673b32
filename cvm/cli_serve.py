"""``cvm serve``, ``cvm bento`` and ``cvm nbo``: the scoring service and the offer engine.

Thin commands over :mod:`serving` and :mod:`scoring`. BentoML and MLflow are imported
inside the commands. Which catalog a dataset uses is ``scoring.catalog.resolve_catalog_path``'s
rule (``--catalog``, then the dataset's ``catalog.yaml``, then a shipped one for the
built-in and synthetic datasets); without one, the service and a Bento serve scores only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from cvm.common import (
    HomeOpt,
    as_of_date,
    command,
    console,
    err,
    fail,
    group,
    home_of,
    quiet_mlflow,
    run,
    warn,
)
from cvm.output import print_nbo_table

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose published snapshot is served.")]
CatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="Offer catalog YAML (or CVM_CATALOG); default: "
                                                    "catalog.yaml in the dataset directory, the shipped catalog "
                                                    "of the built-in and synthetic datasets, else none.")]

nbo_app = group("Next-best-offer engine: write a starter catalog, validate it, evaluate it offline.")


def serve(
    port: Annotated[int, typer.Option("--port", "-p", help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    dataset: DatasetOpt = "completejourney",
    catalog: CatalogOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each loads the models).")] = 1,
    reload_seconds: Annotated[float, typer.Option("--reload-seconds", help="How often champion aliases and the "
                                                  "snapshot are checked for changes (0: only on /admin/reload).")]
    = 30.0,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept requests without an API key. LOCAL USE ONLY.")]
    = False,
    new_key_: Annotated[bool, typer.Option("--new-key", help="Print a freshly generated API key and exit.")] = False,
    simulation_clock: Annotated[bool, typer.Option("--simulation-clock", help="Let /recommend callers set the "
                                                   "decision time ('at'), for cvm simulate --url. Never in "
                                                   "production.")] = False,
    triggers: Annotated[Path | None, typer.Option("--triggers", help="Trigger rules YAML (when X and not Y within "
                                                  "T: a logged offer decision to the outbox and the webhook).",
                                                  dir_okay=False)] = None,
    home: HomeOpt = None,
) -> None:
    """Serve scores and next-best offers over HTTP (BentoML), from the champion models in the MLflow registry and
    the dataset's published feature snapshot.

    Without an offer catalog (none given and none found for the dataset) the service still starts and serves
    /score; /recommend answers 404 saying how to add one (cvm nbo init), which is picked up at the next reload
    check.

    API keys come from CVM_API_KEYS (comma-separated) or CVM_API_KEYS_FILE; admin keys for /admin/reload from
    CVM_ADMIN_KEYS. The OpenAPI page is at http://HOST:PORT/. SIGTERM or Ctrl-C stops the server and its workers;
    the exit status is the server's.
    """
    from serving.keys import new_key

    if new_key_:
        console.print(new_key())
        return
    from base.processes import run_forwarding_signals
    from scoring.catalog import CatalogError, load_catalog, no_catalog_message, resolve_catalog_path
    from serving.launch import REPO_ROOT, server_command, server_env
    from serving.settings import ServiceSettings, SettingsError
    from sources.dataset import dataset_name

    # the server runs in the project root: a dataset directory is passed as an absolute path
    spec = str(Path(dataset).expanduser().resolve()) if Path(dataset).expanduser().is_dir() else dataset
    env = server_env(os.environ, dataset=spec, home=home, catalog=catalog, reload_seconds=reload_seconds,
                     no_auth=no_auth, workers=workers, simulation_clock=simulation_clock, triggers=triggers)
    from scoring.triggers.rules import TriggerConfigError, check_secret, load_triggers

    try:
        settings = ServiceSettings.from_env(env)
        path = resolve_catalog_path(spec, settings.catalog)
        if path is not None:
            load_catalog(path)
        if settings.triggers is not None:
            from scoring.segments.definitions import SegmentError
            from serving.triggers import realtime_segments

            rules = load_triggers(settings.triggers)
            check_secret(rules, env)
            try:
                realtime_segments(settings, rules)
            except SegmentError as exc:
                raise TriggerConfigError(str(exc)) from None
    except (SettingsError, CatalogError, TriggerConfigError) as exc:
        fail(str(exc))
    if path is None:
        warn(f"{no_catalog_message(run(lambda: dataset_name(spec)))}. Serving scores only: /recommend answers "
             "404 until a catalog is found.")
    if no_auth:
        err.print("[bold red]WARNING: authentication is OFF (--no-auth). Anyone who can reach "
                  f"{host}:{port} can read customer scores. Local use only.[/bold red]")
    console.print(f"serving dataset [bold]{dataset}[/bold] on http://{host}:{port}  (OpenAPI page: /, "
                  f"readiness: /readyz)")
    raise typer.Exit(run_forwarding_signals(server_command(host, port), env=env, cwd=REPO_ROOT))


def bento(
    dataset: DatasetOpt = "completejourney",
    catalog: CatalogOpt = None,
    home: HomeOpt = None,
) -> None:
    """Pack the champion models, the published snapshot (with its contact history) and the offer catalog into the
    BentoML model store and build a Bento that serves without the MLflow server.

    Without an offer catalog (none given and none found for the dataset) the Bento serves /score only and
    /recommend answers 404. Then: bentoml containerize cvm-scoring:latest"""
    from scoring.catalog import load_catalog, no_catalog_message, resolve_catalog_path
    from serving.bento import export_to_bentoml
    from serving.launch import REPO_ROOT
    from sources.dataset import dataset_name

    quiet_mlflow()
    h = home_of(home)
    name = run(lambda: dataset_name(dataset))
    path = resolve_catalog_path(dataset, catalog)
    if path is None:
        warn(f"{no_catalog_message(name)}. The Bento will serve scores only.")

    def pack() -> list[str]:
        if path is not None:
            load_catalog(path)
        return export_to_bentoml(h.mlflow_tracking_uri(), h.online(name), path)

    for t in run(pack):
        console.print(f"packed {t}")
    code = subprocess.call([sys.executable, "-m", "bentoml", "build", str(REPO_ROOT)], cwd=REPO_ROOT)
    if code == 0:
        console.print("built; run it with: bentoml serve cvm-scoring:latest   "
                      "(set CVM_API_KEYS), or make an image: bentoml containerize cvm-scoring:latest")
    raise typer.Exit(code)


@command(nbo_app, "check")
def nbo_check(
    catalog: Annotated[Path | None, typer.Argument(help="Offer catalog YAML; default: the dataset's catalog "
                                                    "(its catalog.yaml, or the shipped one of the built-in and "
                                                    "synthetic datasets).")] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose catalog is checked when no "
                                         "CATALOG is given.")] = "completejourney",
    home: HomeOpt = None,
) -> None:
    """Validate an offer catalog, including its target categories against the champion cross-sell model."""
    from scoring.catalog import load_catalog, no_catalog_message, resolve_catalog_path
    from sources.dataset import dataset_name

    path = resolve_catalog_path(dataset, catalog)
    if path is None:
        fail(no_catalog_message(run(lambda: dataset_name(dataset))))
    cat = run(lambda: load_catalog(path, _categories(home)))
    console.print(f"{path}: {len(cat.offers)} offers, channels {', '.join(cat.channels)}: valid")


@command(nbo_app, "init")
def nbo_init(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset directory the catalog is for (or the "
                                         "built-in name, with --out).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write it; default "
                                                "<dataset dir>/catalog.yaml, where it is found by itself.")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    home: HomeOpt = None,
) -> None:
    """Write a starter offer catalog for a dataset: one cross-sell offer per category, a retention, an upsell and
    a loyalty offer, channels, contact caps and the experiment's arms, every field commented for you to edit.

    The cross-sell categories are the champion cross-sell model's (a catalog's targets must be ones it scores) or,
    when none is registered, the dataset's main categories (those the cross-sell model is trained on). The text is
    validated before it is written. By default it goes into the dataset directory, so it travels with the data
    and cvm serve, score-batch, nbo and bento find it without --catalog. An existing file is kept unless --force.
    """
    from scoring.catalog import DATASET_CATALOG, load_catalog
    from scoring.catalog_init import starter_catalog
    from sources.dataset import BUILTINS

    root = Path(dataset).expanduser()
    if not root.is_dir() and dataset not in BUILTINS:
        fail(f"dataset {dataset!r} is neither an existing directory nor a built-in name ({', '.join(BUILTINS)})")
    if out is None:
        if not root.is_dir():
            fail(f"the built-in dataset {dataset!r} has no directory of its own to hold a catalog (it ships "
                 f"scoring/catalogs/{dataset}.yaml): give --out FILE, then use it with --catalog FILE")
        out = root / DATASET_CATALOG
    if out.exists() and not force:
        fail(f"{out} exists and is left as it is (--force overwrites it)")
    categories, source = _champion_categories(home)
    if categories is None:
        categories = run(lambda: _dataset_categories(dataset, home))
        source = "the dataset's main categories (no cross-sell champion is registered)"
    if not categories:
        warn("the dataset has no product categories: the starter catalog has no cross_sell offer")
    text = starter_catalog(categories, dataset=run(lambda: _dataset_name(dataset)), categories_from=source)

    def write() -> None:
        staged = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            staged.write_text(text, encoding="utf-8")
            load_catalog(staged, categories)  # what is written is what loads
            os.replace(staged, out)
        finally:
            staged.unlink(missing_ok=True)

    run(write)
    console.print(f"wrote {out}: {len(categories)} cross-sell offer(s) from {source}, a retention, an upsell and a "
                  f"loyalty offer. Edit it, then check it: cvm nbo check {out}")


def _categories(home: Path | None) -> list[str] | None:
    """The champion cross-sell model's categories (None when there is none)."""
    return _champion_categories(home)[0]


def _champion_categories(home: Path | None) -> tuple[list[str] | None, str]:
    """The champion cross-sell model's categories (None when there is none) and which model that is."""
    from scoring.champions import NotReadyError, RegistrySource

    quiet_mlflow()
    src = RegistrySource(home_of(home).mlflow_tracking_uri())
    try:
        versions = src.versions()
    except NotReadyError:
        return None, ""
    if "cross-sell" not in versions:
        return None, ""
    champion = src.load("cross-sell", versions["cross-sell"])
    return list(champion.model.categories), f"the cross-sell champion {champion.name} version {champion.version}"


def _dataset_name(dataset: str) -> str:
    from sources.dataset import dataset_name

    return dataset_name(dataset)


def _dataset_categories(dataset: str, home: Path | None) -> list[str]:
    """The dataset's main categories, as a feature build (and so the cross-sell model) sees them:
    its experiment's feature settings (experiments/<name>.yaml when present) over its tables."""
    from base.engines import open_engine
    from features.pipeline import main_categories
    from sources.dataset import resolve_dataset
    from sources.load import load_sources
    from training.experiment import dataset_config, load_config

    h = home_of(home)
    ds = resolve_dataset(dataset, h, progress=True)
    cfg = load_config(dataset_config(ds.name))
    with open_engine("duckdb", temp_dir=h.tmp(ensure=True)) as engine:
        sources = load_sources(ds, engine, validation=cfg.validation, tables=("transactions", "products"))
        return list(main_categories(sources, ds, cfg.features))


def evaluate_offers(dataset: str, as_of: str, *, catalog: Path | None = None, horizon_days: int = 28,
                    seed: int = 0, home: Path | None = None) -> None:
    """``cvm nbo evaluate`` as a call (the demo runs it too): evaluate, log, print the table."""
    from batch.offer_evaluation import EvaluationError, evaluate_and_log

    day = as_of_date(as_of)
    quiet_mlflow()
    table = run(lambda: evaluate_and_log(dataset, day, home_of(home), catalog_path=catalog,
                                         horizon_days=horizon_days, seed=seed), EvaluationError)
    print_nbo_table(table, dataset, as_of, horizon_days)


@command(nbo_app, "evaluate")
def nbo_evaluate(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Observational mode: offers chosen on data before "
                                              "this date, judged on the following horizon (YYYY-MM-DD).")] = None,
    log: Annotated[str | None, typer.Option("--log", help="Off-policy mode: the logged decisions of FROM..TO "
                                            "(dates, UTC, TO exclusive) to estimate candidate policies on.")]
    = None,
    policy: Annotated[list[str] | None, typer.Option("--policy", help="--log: a candidate, repeatable: current, "
                                                     "propensity, uplift, most-popular, random, no-offer, or a "
                                                     "catalog YAML file (default: all built-in ones).")] = None,
    dataset: DatasetOpt = "completejourney",
    catalog: CatalogOpt = None,
    horizon_days: Annotated[int, typer.Option("--horizon-days", min=1, help="Days after the decision in which a "
                                              "purchase (--as-of) or a convert outcome (--log) counts.")] = 28,
    reward: Annotated[str, typer.Option("--reward", help="--log: convert (1/0 per decision) or value (the "
                                        "conversions' value).")] = "convert",
    decisions: Annotated[str | None, typer.Option("--decisions", help="--log: the decision log (sqlite:///path "
                                                  "or postgresql://...); default CVM_DECISIONS_URL, else the "
                                                  "dataset's log under CVM_HOME.")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="--log: bootstrap resamples of each "
                                           "interval (0: none).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random policy (--as-of) or of the bootstrap "
                                      "(--log).")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="--log: directory for ope.json and ope.csv; "
                                             "default $CVM_HOME/batch/<dataset>/ope/<from>_<to>/.")] = None,
    home: HomeOpt = None,
) -> None:
    """Evaluate offer policies offline, in one of two modes.

    --as-of DATE (observational): the next-best-offer policy against random and most-popular offers, as the share of
    customers who bought the top offer's category in the horizon and the spend realised there (MLflow cvm-nbo).
    Customers were not sent these offers, so this finds who was about to buy, not what an offer changes.

    --log FROM..TO (off-policy): what each candidate policy would have earned on the logged decisions, by IPS, SNIPS
    and doubly robust estimators on the log's pscores, with bootstrap intervals, the decisions that support each
    estimate and a warning when a candidate picks offers the log rarely explored. Writes ope.json and ope.csv and
    logs them to MLflow (cvm-ope). On a synthetic dataset each candidate's true value is shown beside it.
    """
    if (as_of is None) == (log is None):
        fail("give exactly one of --as-of DATE (observational) or --log FROM..TO (off-policy)")
    if as_of is not None:
        if policy:
            fail("--policy goes with --log FROM..TO")
        evaluate_offers(dataset, as_of, catalog=catalog, horizon_days=horizon_days, seed=seed, home=home)
        return
    from batch.ope_job import OPEError, log_to_mlflow, parse_window, run_ope
    from cvm.output import print_ope
    from sources.dataset import dataset_name

    start, end = run(lambda: parse_window(log), OPEError)
    h = home_of(home)
    url = decisions or os.environ.get("CVM_DECISIONS_URL") or None
    quiet_mlflow()
    result = run(lambda: run_ope(h, dataset, start, end, policies=policy or (), decisions_url=url,
                                 catalog_path=catalog, horizon_days=horizon_days, reward=reward,
                                 n_bootstrap=bootstrap, seed=seed, out=out,
                                 step=lambda m: err.print(f"[dim]{m}[/]")), OPEError, ValueError)
    print_ope(result)
    run_id = log_to_mlflow(result, h.mlflow_tracking_uri(), run(lambda: dataset_name(dataset)))
    console.print(f"wrote {result.path}; logged to MLflow run {run_id} (experiment cvm-ope)", soft_wrap=True)
