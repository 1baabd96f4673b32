"""How ``cvm serve`` starts the service: the ``bentoml serve`` command line and the
environment the service reads its settings from (``serving.settings``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from serving.settings import SERVICE_NAME

#: the project root: ``bentoml serve`` imports ``serving.service`` from there
REPO_ROOT = Path(__file__).resolve().parent.parent


def server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:CVMService", "--host", host,
            "--port", str(port), "--working-dir", str(REPO_ROOT)]


def server_env(base: Mapping[str, str], *, dataset: str, home: Path | None = None, catalog: Path | None = None,
               reload_seconds: float = 30.0, no_auth: bool = False, workers: int = 1,
               simulation_clock: bool = False, triggers: Path | None = None) -> dict[str, str]:
    """``base`` (the caller's environment) with the service's settings from ``cvm serve``'s options."""
    env = dict(base)
    if home is not None:
        env["CVM_HOME"] = str(home)
    env["CVM_DATASET"] = dataset
    env["CVM_RELOAD_SECONDS"] = str(reload_seconds)
    if catalog is not None:
        env["CVM_CATALOG"] = str(Path(catalog).resolve())
    if triggers is not None:
        env["CVM_TRIGGERS"] = str(Path(triggers).resolve())
    if no_auth:
        env["CVM_NO_AUTH"] = "1"
    if simulation_clock:
        env["CVM_SIMULATION_CLOCK"] = "1"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's client retries an unreachable server for minutes by default (7 retries,
    # exponential backoff): the service retries on its own, so fail each attempt quickly
    # and say why on /readyz and in the log.
    env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    overrides = json.loads(env.get("BENTOML_CONFIG_OVERRIDES") or "{}")
    overrides.setdefault("services", {}).setdefault(SERVICE_NAME, {})["workers"] = int(workers)
    env["BENTOML_CONFIG_OVERRIDES"] = json.dumps(overrides)
    return env
