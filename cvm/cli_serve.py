"""``cvm serve``, ``cvm bento`` and ``cvm nbo``: the scoring service and the offer engine.

Thin commands over :mod:`serving`. Registered on the main app by ``cvm.cli``; this module
must not import ``cvm.cli``. BentoML and MLflow are imported inside the commands.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="State directory; default $CVM_HOME or ./cvm_home.",
                                                 envvar="CVM_HOME")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose published snapshot is served.")]
CatalogOpt = Annotated[Optional[Path], typer.Option("--catalog", help="Offer catalog YAML; default "
                                                    "serving/catalogs/<dataset>.yaml.")]
REPO_ROOT = Path(__file__).resolve().parent.parent

nbo_app = typer.Typer(help="Next-best-offer engine: validate a catalog, evaluate it offline.", no_args_is_help=True)


def new_key() -> str:
    """A random API key (32 bytes, URL-safe)."""
    return "cvm_" + secrets.token_urlsafe(32)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def serve(
    port: Annotated[int, typer.Option("--port", "-p", help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    dataset: DatasetOpt = "completejourney",
    catalog: CatalogOpt = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes (each loads the models).")] = 1,
    reload_seconds: Annotated[float, typer.Option("--reload-seconds", help="How often champion aliases and the "
                                                  "snapshot are checked for changes (0: only on /admin/reload).")]
    = 30.0,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept requests without an API key. LOCAL USE ONLY.")]
    = False,
    new_key_: Annotated[bool, typer.Option("--new-key", help="Print a freshly generated API key and exit.")] = False,
    home: HomeOpt = None,
) -> None:
    """Serve scores and next-best offers over HTTP (BentoML), from the champion models in the
    MLflow registry and the dataset's published feature snapshot.

    API keys come from CVM_API_KEYS (comma-separated) or CVM_API_KEYS_FILE; admin keys for
    /admin/reload from CVM_ADMIN_KEYS. The OpenAPI page is at http://HOST:PORT/.
    """
    if new_key_:
        console.print(new_key())
        return
    from serving.catalog import CatalogError, default_catalog_path, load_catalog
    from serving.settings import ServiceSettings, SettingsError

    env = dict(os.environ)
    if home is not None:
        env["CVM_HOME"] = str(home)
    env["CVM_DATASET"] = dataset
    env["CVM_RELOAD_SECONDS"] = str(reload_seconds)
    if catalog is not None:
        env["CVM_CATALOG"] = str(catalog.resolve())
    if no_auth:
        env["CVM_NO_AUTH"] = "1"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        settings = ServiceSettings.from_env(env)
        load_catalog(settings.catalog or default_catalog_path(dataset))
    except (SettingsError, CatalogError) as exc:
        _fail(str(exc))
    if no_auth:
        err.print("[bold red]WARNING: authentication is OFF (--no-auth). Anyone who can reach "
                  f"{host}:{port} can read customer scores. Local use only.[/bold red]")
    console.print(f"serving dataset [bold]{dataset}[/bold] on http://{host}:{port}  (OpenAPI page: /, "
                  f"readiness: /readyz)")
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:CVMService", "--host", host,
           "--port", str(port), "--working-dir", str(REPO_ROOT)]
    if workers != 1:
        env["BENTOML_CONFIG_OPTIONS"] = (env.get("BENTOML_CONFIG_OPTIONS", "") +
                                         f" services.cvm-scoring.workers={workers}").strip()
    raise typer.Exit(subprocess.call(cmd, env=env, cwd=REPO_ROOT))


def bento(
    dataset: DatasetOpt = "completejourney",
    catalog: CatalogOpt = None,
    home: HomeOpt = None,
) -> None:
    """Pack the champion models, the published snapshot and the offer catalog into the BentoML
    model store and build a Bento (runs without the MLflow server). Then:
    bentoml containerize cvm-scoring:latest"""
    from cvm.home import Home
    from serving.catalog import CatalogError, default_catalog_path, load_catalog
    from serving.engine import NotReadyError
    from serving.loader import export_to_bentoml

    h = Home.from_env(home)
    path = catalog or default_catalog_path(dataset)
    try:
        load_catalog(path)
        tags = export_to_bentoml(h.mlflow_tracking_uri(), h.online(dataset), path)
    except (CatalogError, NotReadyError) as exc:
        _fail(str(exc))
    for t in tags:
        console.print(f"packed {t}")
    code = subprocess.call([sys.executable, "-m", "bentoml", "build", str(REPO_ROOT)], cwd=REPO_ROOT)
    if code == 0:
        console.print("built; run it with: bentoml serve cvm-scoring:latest   "
                      "(set CVM_API_KEYS), or make an image: bentoml containerize cvm-scoring:latest")
    raise typer.Exit(code)


@nbo_app.command("check")
def nbo_check(
    catalog: Annotated[Path, typer.Argument(help="Offer catalog YAML.")],
    dataset: DatasetOpt = "completejourney",
    home: HomeOpt = None,
) -> None:
    """Validate an offer catalog, including its target categories against the champion cross-sell model."""
    from serving.catalog import CatalogError, load_catalog

    try:
        cat = load_catalog(catalog, _categories(home))
    except CatalogError as exc:
        _fail(str(exc))
    console.print(f"{catalog}: {len(cat.offers)} offers, channels {', '.join(cat.channels)}: valid")


def _categories(home: Optional[Path]) -> list[str] | None:
    """The champion cross-sell model's categories (None when there is none)."""
    from cvm.home import Home
    from serving.engine import NotReadyError
    from serving.loader import RegistrySource

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    src = RegistrySource(Home.from_env(home).mlflow_tracking_uri())
    try:
        versions = src.versions()
    except NotReadyError:
        return None
    if "cross-sell" not in versions:
        return None
    return list(src.load("cross-sell", versions["cross-sell"]).model.categories)


@nbo_app.command("evaluate")
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
    """Offline evaluation of the next-best-offer policy against random and most-popular
    offers: share of customers who bought the top offer's category in the horizon and the
    spend realised there. Logged to MLflow (experiment cvm-nbo)."""
    from serving.evaluate import EvaluationError, evaluate_and_log

    try:
        day = date.fromisoformat(as_of)
    except ValueError:
        _fail(f"--as-of {as_of!r} is not a date (YYYY-MM-DD)")
    try:
        table = evaluate_and_log(dataset, day, catalog, horizon_days, seed, home)
    except EvaluationError as exc:
        _fail(str(exc))
    from rich.table import Table

    t = Table(title=f"next-best-offer, {dataset}, as_of {as_of}, next {horizon_days} days")
    for c in table.columns:
        t.add_column(c, justify="right" if c != "policy" else "left")
    for row in table.itertuples(index=False):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)
