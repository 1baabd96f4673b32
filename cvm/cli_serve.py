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


def dataset_name(spec: str, home: Optional[Path]) -> str:
    """A built-in dataset's name, or the name of a dataset directory (what keys its state)."""
    if Path(spec).is_dir():
        from cvm.home import Home
        from sources.dataset import resolve_dataset

        return resolve_dataset(spec, Home.from_env(home)).name
    return spec


def new_key() -> str:
    """A random API key (32 bytes, URL-safe)."""
    return "cvm_" + secrets.token_urlsafe(32)


def ensure_key_file(home: Path) -> tuple[str, Path, bool]:
    """The first key of ``$CVM_HOME/secrets/api-keys``, creating the file (mode 600) with a new
    key when it does not exist. Returns (key, path, created)."""
    from serving.settings import default_keys_file

    path = default_keys_file(home)
    if path.exists():
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if lines:
            return lines[0], path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# API keys of `cvm serve` (one per line). Keep this file secret.\n" + key + "\n")
    return key, path, True


def demo_service(home: Path, dataset: str, customer_id: str) -> None:
    """Start the service, score one customer and ask for offers over HTTP, stop it."""
    import socket
    import time

    import httpx

    key, path, created = ensure_key_file(home)
    console.print(f"API key ({'new, ' if created else ''}stored in {path}): [bold]{key}[/bold]")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CVM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("CVM_API_KEYS", None)
    env.pop("CVM_API_KEYS_FILE", None)
    log = home / "serving" / "demo-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cvm.cli", "serve", "--port", str(port), "--dataset", dataset, "--reload-seconds", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"cvm serve exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"cvm serve not ready after 120 s; see {log}")
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as c:
            assert httpx.post(url + "/score", json={"customer_ids": [customer_id]}).status_code == 401
            r = c.post("/score", json={"customer_ids": [customer_id]}).json()["results"][0]
            rec = c.post("/recommend", json={"customer_id": customer_id, "k": 3}).json()
        console.print(f"POST /score {customer_id}: segment {r['rfm_segment']}, churn {r['churn_probability']:.3f}, "
                      f"next purchase {r['next_purchase_probability']:.3f}, CLV {r['clv']:.2f}; churn driven by "
                      + ", ".join(f"{x['feature']} ({x['effect']})" for x in r["reasons"].get("churn", [])))
        console.print(f"POST /recommend {customer_id}: " + "; ".join(
            f"{o['offer_id']} (expected value {o['expected_value']:.2f})" for o in rec["offers"]))
        console.print("without a key: 401. Serve it yourself: `cvm serve` (the key above is read from "
                      f"{path}); try: curl -H 'Authorization: Bearer {key}' -d "
                      f"'{{\"customer_ids\": [\"{customer_id}\"]}}' -H 'Content-Type: application/json' "
                      "localhost:3000/score")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(20)


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
    # MLflow's client retries an unreachable server for minutes by default (7 retries,
    # exponential backoff): the service retries on its own, so fail each attempt quickly
    # and say why on /readyz and in the log.
    env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        settings = ServiceSettings.from_env(env)
        load_catalog(settings.catalog or default_catalog_path(dataset_name(dataset, home)))
    except (SettingsError, CatalogError) as exc:
        _fail(str(exc))
    if no_auth:
        err.print("[bold red]WARNING: authentication is OFF (--no-auth). Anyone who can reach "
                  f"{host}:{port} can read customer scores. Local use only.[/bold red]")
    console.print(f"serving dataset [bold]{dataset}[/bold] on http://{host}:{port}  (OpenAPI page: /, "
                  f"readiness: /readyz)")
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:CVMService", "--host", host,
           "--port", str(port), "--working-dir", str(REPO_ROOT)]
    env["CVM_WORKERS"] = str(workers)
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
    name = dataset_name(dataset, home)
    path = catalog or default_catalog_path(name)
    try:
        load_catalog(path)
        tags = export_to_bentoml(h.mlflow_tracking_uri(), h.online(name), path)
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
    print_nbo_table(table, dataset, as_of, horizon_days)


def print_nbo_table(table, dataset: str, as_of: str, horizon_days: int) -> None:
    from rich.table import Table

    t = Table(title=f"next-best-offer policies, {dataset}: one cross-sell offer per customer at {as_of}, "
                    f"outcome in the next {horizon_days} days (observational; logged to MLflow cvm-nbo)")
    for c in table.columns:
        t.add_column(c, justify="right" if c != "policy" else "left")
    for row in table.itertuples(index=False):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)
