"""A served home (synthetic data, published snapshot, four trained champions, a catalog)
and a real ``cvm serve`` process over HTTP, shared by the serving tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from base.processes import ProcessError, free_port, start, stop, wait_until

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2025-07-01"
API_KEY = "test-api-key-0123456789abcdef"
ADMIN_KEY = "test-admin-key-0123456789abcdef"
#: tiny training budgets on the synthetic dataset: tests check behaviour, not quality
SMALL_TRAIN = """
train:
  origins: {step_days: 28, min_history_days: 60, max_train_origins: 2}
  search: {max_rounds: 60, early_stopping_rounds: 10}
  budget: {trials: 2, timeout_seconds: 60}
  seed: 7
"""


@dataclass
class ServedHome:
    home: Path
    dataset: Path  # the synthetic dataset directory
    name: str  # its name (keys the online store)
    catalog: Path
    categories: list[str]


def catalog_for(categories: list[str]) -> dict:
    """A small catalog over the synthetic dataset's categories: one of each offer type."""
    return {
        "version": "test", "currency": "GBP", "horizon_days": 28,
        "channels": ["email", "app", "sms"],
        "contact_policy": {"caps": [{"max_contacts": 3, "window_days": 30}], "min_expected_value": 0.0},
        "offers": [
            *[{"id": f"xs-{i}", "name": f"Try {c}", "type": "cross_sell", "target_category": c, "cost": 0.1,
               "value": {"model": "category_spend", "margin": 0.3}, "channels": ["email", "app"],
               "cooldown_days": 7} for i, c in enumerate(categories)],
            {"id": "ret", "name": "Come back", "type": "retention", "cost": 0.5,
             "value": {"model": "clv_share", "rate": 0.2}, "channels": ["email", "sms"]},
            {"id": "up", "name": "Spend more", "type": "upsell", "cost": 0.2,
             "value": {"model": "basket_uplift", "rate": 0.1, "margin": 0.3}, "channels": ["app"]},
            {"id": "loy", "name": "VIP", "type": "loyalty", "cost": 0.3,
             "value": {"model": "clv_share", "rate": 0.05}, "channels": ["email"],
             "eligibility": {"segments": ["champions", "loyal"], "known_customers_only": True}},
        ],
    }


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> ServedHome:
    """Synthetic 600 customers: features built and published at AS_OF, four champions
    trained with tiny budgets into the home's SQLite registry, a catalog for them."""
    from cvm.cli import app
    from scoring.champions import RegistrySource
    from sources.synth import generate
    from training.tasks import TASKS

    root = tmp_path_factory.mktemp("served")
    data = root / "synth-600"
    generate(data, customers=600, seed=3)
    exp = root / "experiments"
    exp.mkdir()
    (exp / "synthetic.yaml").write_text((REPO / "experiments" / "synthetic.yaml").read_text())
    for task in TASKS:
        (exp / f"{task}.yaml").write_text("extends: synthetic.yaml\n" + SMALL_TRAIN)
    home = root / "home"
    runner = CliRunner()
    # the in-process CLI points MLflow's process-wide URIs at this home: put them back after
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved_uris = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        r = runner.invoke(app, ["features", "build", "--dataset", str(data), "--as-of", AS_OF, "--publish",
                                "--config", str(exp / "synthetic.yaml"), "--home", str(home)],
                          catch_exceptions=False)
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["train", "all", "--dataset", str(data), "--as-of", AS_OF,
                                "--experiments", str(exp), "--home", str(home)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        src = RegistrySource(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        versions = src.versions()
        assert set(versions) == set(TASKS), versions
        categories = list(src.load("cross-sell", versions["cross-sell"]).model.categories)
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_uris
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    catalog = root / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(catalog_for(categories), sort_keys=False))
    return ServedHome(home, data, data.name, catalog, categories)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(served: ServedHome, log: Path, *, reload_seconds: float = 1.0, extra_env: dict | None = None,
                 args: list[str] | None = None, wait_ready: bool = True) -> Server:
    """``cvm serve`` on a free port, in a process group of its own (``base.processes.start``)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CVM_NO_AUTH")}
    env.update({"CVM_API_KEYS": API_KEY, "CVM_ADMIN_KEYS": ADMIN_KEY, "MLFLOW_DISABLE_TELEMETRY": "true",
                "BENTOML_HOME": str(served.home / "bentoml"), **(extra_env or {})})
    cmd = [sys.executable, "-m", "cvm.cli", "serve", "--port", str(port), "--dataset", str(served.dataset),
           "--catalog", str(served.catalog), "--home", str(served.home), "--reload-seconds", str(reload_seconds),
           *(args or [])]
    log.write_bytes(b"")  # a fresh log: start() appends
    server = Server(f"http://127.0.0.1:{port}", start(cmd, env=env, log=log, die_with_parent=True), log)
    if wait_ready:
        wait_ready_or_fail(server)
    return server


def wait_ready_or_fail(server: Server, timeout: float = 120.0) -> None:
    """Wait for ``/readyz`` 200; fail the test (with the log's tail) if the server exits
    first or is not ready in time, and then stop it."""
    try:
        wait_until(lambda: httpx.get(server.url + "/readyz", timeout=2).status_code == 200, proc=server.proc,
                   timeout=timeout, interval=0.5, what=f"server at {server.url}", log=server.log)
    except ProcessError as exc:
        stop_server(server)
        pytest.fail(str(exc))


def stop_server(server: Server) -> None:
    """Stop the server's whole process tree: SIGTERM, SIGKILL after 20 s."""
    stop(server.proc, timeout=20)


@pytest.fixture(scope="module")
def server(served_home: ServedHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(served_home, tmp_path_factory.mktemp("serve") / "server.log")
    try:
        yield s
    finally:
        stop_server(s)
