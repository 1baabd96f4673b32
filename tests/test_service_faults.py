"""Faults around a running `cvm serve`: the registry (a real `mlflow server` on loopback)
unreachable at start-up and lost after it, a corrupt model version promoted, the online
snapshot missing or corrupt. Each keeps serving what was loaded, says why, and never
answers a client with a 5xx for it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from base.processes import free_port, http_ok, start, stop, wait_until
from tests.serving_fixtures import ADMIN_KEY, API_KEY, start_server, stop_server, wait_ready_or_fail

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def own_home(served_home, tmp_path):
    """A copy of the served home that a test may break."""
    home = tmp_path / "home"
    shutil.copytree(served_home.home, home, ignore=shutil.ignore_patterns("bentoml"))
    return replace(served_home, home=home)


def _some_id(home: Path, dataset: str) -> str:
    import pyarrow.dataset as pads

    snap = next((home / "features" / dataset).glob("as_of=*"))
    return str(pads.dataset(str(snap), format="parquet").to_table(columns=["customer_id"]).column(0)[0].as_py())


def _score(server, cid: str) -> httpx.Response:
    return httpx.post(server.url + "/score", json={"customer_ids": [cid], "reasons": False}, headers=AUTH,
                      timeout=30)


def _until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_registry_unreachable_at_start_up(own_home, tmp_path):
    """MLflow at a closed port: the service runs, is not ready, says why on the log and on
    requests (503, not 500), and becomes ready by itself when the registry is back."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(own_home, tmp_path / "serve.log", extra_env={"MLFLOW_TRACKING_URI": uri},
                          wait_ready=False)
    mlflow_proc = None
    try:
        assert _until(lambda: "not ready" in server.log_text(), 90), server.log_text()[-3000:]
        assert httpx.get(server.url + "/readyz", timeout=5).status_code == 503
        r = _score(server, "1")
        assert r.status_code == 503 and "not ready" in r.text, r.text
        assert "127.0.0.1" in server.log_text() or "onnect" in server.log_text()  # the log says where and why
        mlflow_proc = _mlflow_server(own_home.home, port, tmp_path / "mlflow.log")
        wait_ready_or_fail(server, timeout=120)
        assert _score(server, _some_id(own_home.home, own_home.name)).status_code == 200
    finally:
        stop_server(server)
        if mlflow_proc is not None:
            stop(mlflow_proc)  # the whole tree: uvicorn and its worker outlive a killed parent


def _mlflow_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    """A real ``mlflow server`` on the home's registry, in a process group of its own
    (``base.processes.start``): stop it with ``base.processes.stop``."""
    db = home / "mlflow" / "mlflow.db"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    # the job runner (huey consumers) serves GenAI features the registry does not use
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = start(cmd, env=env, log=log, die_with_parent=True)
    try:
        wait_until(http_ok(f"http://127.0.0.1:{port}/health"), proc=proc, timeout=90, what="mlflow server", log=log)
    except BaseException:
        stop(proc)
        raise
    return proc


def test_registry_lost_after_start_up_keeps_serving(own_home, tmp_path):
    """The service loads its champions through a real `mlflow server`; the server dies: the
    loaded champions keep serving (every request 200), readiness stays up, the failed
    checks are logged."""
    port = free_port()
    mlflow_proc = _mlflow_server(own_home.home, port, tmp_path / "mlflow.log")
    server = None
    try:
        server = start_server(own_home, tmp_path / "serve.log",
                              extra_env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
        cid = _some_id(own_home.home, own_home.name)
        first = _score(server, cid)
        assert first.status_code == 200
        versions = first.headers["X-Model-Versions"]
        os.killpg(mlflow_proc.pid, signal.SIGKILL)  # the fault: the registry's whole tree dies at once
        mlflow_proc.wait(10)
        assert _until(lambda: "reload check failed, still serving" in server.log_text(), 60), \
            server.log_text()[-3000:]
        for _ in range(20):
            r = _score(server, cid)
            assert r.status_code == 200 and r.headers["X-Model-Versions"] == versions
            assert r.json()["results"][0] == first.json()["results"][0]
        assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    finally:
        if server is not None:
            stop_server(server)
        stop(mlflow_proc)


def test_corrupt_model_version_promoted_is_rejected(own_home, tmp_path):
    """A version that cannot load is promoted to champion: /admin/reload rejects it, the
    previous champion keeps answering, the failure is logged and counted on /metrics."""
    from mlflow import MlflowClient

    from training import registry

    server = start_server(own_home, tmp_path / "serve.log", reload_seconds=0)
    try:
        cid = _some_id(own_home.home, own_home.name)
        before = _score(server, cid)
        assert before.status_code == 200 and "churn=1" in before.headers["X-Model-Versions"].replace(":", "=")
        bad = tmp_path / "broken-model"
        bad.mkdir()
        (bad / "MLmodel").write_text("this: is not [a model")
        uri = f"sqlite:///{own_home.home / 'mlflow' / 'mlflow.db'}"
        client = MlflowClient(uri, registry_uri=uri)
        v = client.create_model_version("cvm-churn", str(bad))
        registry.promote(client, "churn", str(v.version), reason="test: corrupt version")
        r = httpx.post(server.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
        assert r.status_code == 200, r.text
        after = _score(server, cid)
        assert after.status_code == 200
        assert after.headers["X-Model-Versions"] == before.headers["X-Model-Versions"]
        assert after.json()["results"][0]["churn_probability"] == before.json()["results"][0]["churn_probability"]
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        line = next(ln for ln in metrics.splitlines() if ln.startswith("cvm_model_load_failures_total")
                    and 'task="churn"' in ln)
        assert float(line.rsplit(" ", 1)[1]) >= 1
        assert f"rejected churn version {v.version}" in server.log_text()
    finally:
        stop_server(server)


@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_snapshot_missing_or_corrupt_keeps_the_last_good_one(own_home, tmp_path, fault):
    """A publish points at a snapshot file that is missing or not a database: the service
    keeps answering from the last good snapshot and logs why."""
    server = start_server(own_home, tmp_path / "serve.log", reload_seconds=1)
    try:
        cid = _some_id(own_home.home, own_home.name)
        before = _score(server, cid)
        assert before.status_code == 200
        pointer = own_home.home / "online" / own_home.name / "CURRENT.json"
        meta = json.loads(pointer.read_text())
        name = "snapshots/20991231T000000000000Z-bad000.sqlite"
        if fault == "corrupt":
            (pointer.parent / name).write_bytes(b"this is not a database" * 1000)
        bad = {**meta, "version": "20991231T000000000000Z-bad000", "file": name}
        tmp = pointer.with_name(".CURRENT.tmp")
        tmp.write_text(json.dumps(bad))
        tmp.replace(pointer)  # published the way the store publishes: an atomic pointer switch
        assert _until(lambda: "keeping snapshot" in server.log_text() or "rejected" in server.log_text(), 30), \
            server.log_text()[-3000:]
        for _ in range(10):
            r = _score(server, cid)
            assert r.status_code == 200, r.text
            assert r.json()["results"][0] == before.json()["results"][0]
        assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    finally:
        stop_server(server)
