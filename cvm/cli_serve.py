"""``cvm serve``, ``cvm bento`` and ``cvm nbo``: the scoring service and the offer engine.

Thin commands over :mod:`serving` and :mod:`scoring`. BentoML and MLflow are imported
inside the commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from cvm.common import (
    CatalogOpt,
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
)
from cvm.output import print_nbo_table

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose published snapshot is served.")]

nbo_app = group("Next-best-offer engine: validate a catalog, evaluate it offline.")


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
    home: HomeOpt = None,
) -> None:
    """Serve scores and next-best offers over HTTP (BentoML), from the champion models in the MLflow registry and
    the dataset's published feature snapshot.

    API keys come from CVM_API_KEYS (comma-separated) or CVM_API_KEYS_FILE; admin keys for /admin/reload from
    CVM_ADMIN_KEYS. The OpenAPI page is at http://HOST:PORT/. SIGTERM or Ctrl-C stops the server and its workers;
    the exit status is the server's.
    """
    from serving.keys import new_key

    if new_key_:
        console.print(new_key())
        return
    from base.processes import run_forwarding_signals
    from scoring.catalog import CatalogError, default_catalog_path, load_catalog
    from serving.launch import REPO_ROOT, server_command, server_env
    from serving.settings import ServiceSettings, SettingsError
    from sources.dataset import dataset_name

    env = server_env(os.environ, dataset=dataset, home=home, catalog=catalog, reload_seconds=reload_seconds,
                     no_auth=no_auth, workers=workers)
    try:
        settings = ServiceSettings.from_env(env)
        load_catalog(settings.catalog or default_catalog_path(run(lambda: dataset_name(dataset))))
    except (SettingsError, CatalogError) as exc:
        fail(str(exc))
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

    Then: bentoml containerize cvm-scoring:latest"""
    from scoring.catalog import default_catalog_path, load_catalog
    from serving.bento import export_to_bentoml
    from serving.launch import REPO_ROOT
    from sources.dataset import dataset_name

    quiet_mlflow()
    h = home_of(home)
    name = run(lambda: dataset_name(dataset))
    path = catalog or default_catalog_path(name)

    def pack() -> list[str]:
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
    catalog: Annotated[Path, typer.Argument(help="Offer catalog YAML.")],
    dataset: DatasetOpt = "completejourney",
    home: HomeOpt = None,
) -> None:
    """Validate an offer catalog, including its target categories against the champion cross-sell model."""
    from scoring.catalog import load_catalog

    cat = run(lambda: load_catalog(catalog, _categories(home)))
    console.print(f"{catalog}: {len(cat.offers)} offers, channels {', '.join(cat.channels)}: valid")


def _categories(home: Path | None) -> list[str] | None:
    """The champion cross-sell model's categories (None when there is none)."""
    from scoring.champions import NotReadyError, RegistrySource

    quiet_mlflow()
    src = RegistrySource(home_of(home).mlflow_tracking_uri())
    try:
        versions = src.versions()
    except NotReadyError:
        return None
    if "cross-sell" not in versions:
        return None
    return list(src.load("cross-sell", versions["cross-sell"]).model.categories)


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
    as_of: Annotated[str, typer.Option("--as-of", help="Decision date: offers chosen on data before it, "
                                       "judged on the following horizon (YYYY-MM-DD).")],
    dataset: DatasetOpt = "completejourney",
    catalog: CatalogOpt = None,
    horizon_days: Annotated[int, typer.Option("--horizon-days", help="Days after as_of in which a purchase "
                                              "of the offer's category counts.")] = 28,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random policy.")] = 0,
    home: HomeOpt = None,
) -> None:
    """Offline evaluation of the next-best-offer policy against random and most-popular offers: share of customers
    who bought the top offer's category in the horizon and the spend realised there. Logged to MLflow
    (experiment cvm-nbo)."""
    evaluate_offers(dataset, as_of, catalog=catalog, horizon_days=horizon_days, seed=seed, home=home)
