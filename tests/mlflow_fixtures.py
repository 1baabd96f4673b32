"""Pytest plugin: an isolated MLflow store per test, a real tracking server per session, a tiny model.

Registered with ``pytest_plugins = ["tests.mlflow_fixtures"]``. Registry and
serving tests use :func:`tiny_pyfunc_model` instead of real training: the
registry only moves aliases, so a model that returns a known constant is enough
to prove that ``models:/...@champion`` loads the version it should.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest

from base.home import Home
from base.processes import ProcessError, free_port, http_ok, start, stop, wait_until

SERVER_START_TIMEOUT_S = 60.0


class ConstantModel(mlflow.pyfunc.PythonModel):
    """Scores every row with the same value: which model was loaded is visible in its output."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"score": [self.value] * len(model_input)})


def tiny_pyfunc_model(value: float = 0.5, *, run_id: str | None = None, experiment_id: str | None = None,
                      name: str = "model") -> str:
    """Log a :class:`ConstantModel` in a run (``run_id``, else a new run) and return its ``runs:/`` URI.

    ``runs:/<run>/model`` is the form ``cvm train`` hands to the registry. Pip
    requirements are given explicitly: inferring them starts a subprocess that
    costs seconds per model.
    """
    active = mlflow.active_run()
    reuse = active is not None and (run_id is None or active.info.run_id == run_id)
    with (_same_run(active) if reuse else mlflow.start_run(run_id=run_id, experiment_id=experiment_id)) as run:
        mlflow.pyfunc.log_model(name=name, python_model=ConstantModel(value), pip_requirements=["mlflow"])
        return f"runs:/{run.info.run_id}/{name}"


class _same_run:
    """The active run as a context manager that does not end it on exit."""

    def __init__(self, run) -> None:
        self.run = run

    def __enter__(self):
        return self.run

    def __exit__(self, *exc) -> None:
        return None


@pytest.fixture
def mlflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A fresh ``CVM_HOME`` whose MLflow store is the default SQLite one (no tracking server).

    MLflow keeps the tracking/registry URI in module globals and environment
    variables; both are put back afterwards so no test sees another's store.
    """
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    home = tmp_path / "home"
    monkeypatch.setenv("CVM_HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, "unset")  # records the original value, so teardown restores it...
        monkeypatch.delenv(var)  # ...even if it was absent
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    yield Home.from_env()
    while mlflow.active_run() is not None:
        mlflow.end_run()


def server_command(root: Path, port: int) -> list[str]:
    """The ``mlflow server`` command line: SQLite store, artifacts proxied through the server."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on a free loopback port for the whole session; yields its URI.

    It is a tree (the ``mlflow server`` parent, uvicorn and its workers): started in a group
    of its own and stopped as one, so nothing of it outlives the session."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # The job runner (three huey consumers) serves GenAI features the registry does not use.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = root / "server.log"
    proc = start(server_command(root, port), env=env, cwd=root, log=log, die_with_parent=True)
    try:
        try:
            wait_until(http_ok(f"{uri}/health"), proc=proc, timeout=SERVER_START_TIMEOUT_S,
                       what=f"mlflow server at {uri}", log=log)
        except ProcessError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield uri
    finally:
        stop(proc)
