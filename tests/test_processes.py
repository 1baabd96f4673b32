"""The process harness (``base.processes``) with real processes: a stop ends the whole tree
and nothing of it is left, SIGKILL follows an ignored SIGTERM, a server that dies before it
is ready is reported with its log, signals reach the foreground server's group, and
``cvm serve`` stopped by SIGTERM (what a process supervisor sends) leaves no process and a
free port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from base.processes import (
    ProcessError,
    free_port,
    group_alive,
    http_ok,
    port_is_free,
    running,
    start,
    stop,
    wait_until,
)
from tests.serving_fixtures import ADMIN_KEY, API_KEY, REPO

#: set in the environment of everything one test starts: finds what is left of it, wherever it is
MARK = "CVM_TEST_PROCESSES_MARK"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _marked(value: str) -> list[psutil.Process]:
    """Running processes whose environment carries ``MARK=value``."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == value and _alive(p):
                found.append(p)
        except psutil.Error:  # gone, a zombie, another user's
            continue
    return found


@pytest.fixture
def marked():
    """(marker value, an environment carrying it); whatever still carries it afterwards is
    killed, so a failing test does not leave its processes to the next one."""
    value = uuid.uuid4().hex
    yield value, {**os.environ, MARK: value}
    left = _marked(value)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(left, timeout=10)


def _log_says(log: Path, text: str):
    return lambda: text in log.read_text(errors="replace")


# A leader that exits with status 7 on SIGTERM, over a child and a grandchild in its group
# and a child in a session of its own (as BentoML's circus starts its workers).
TREE_LEADER = r"""
import signal, subprocess, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
child = subprocess.Popen([sys.executable, "-c",
                          "import subprocess, time; subprocess.Popen(['sleep', '300']); "
                          "print('up', flush=True); time.sleep(300)"], stdout=subprocess.PIPE)
child.stdout.readline()
subprocess.Popen(["sleep", "300"], start_new_session=True)
print("ready", flush=True)
while True:
    signal.pause()
"""


def test_stop_ends_the_whole_tree_and_returns_the_leaders_status(tmp_path, marked):
    value, env = marked
    log = tmp_path / "tree.log"
    proc = start([sys.executable, "-c", TREE_LEADER], env=env, log=log)
    wait_until(_log_says(log, "ready"), proc=proc, timeout=60, interval=0.05, what="tree leader", log=log)
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert len(tree) == 3, tree  # child, grandchild, child in its own session
    assert sorted(os.getpgid(p.pid) == proc.pid for p in tree) == [False, True, True]
    assert os.getpgid(proc.pid) == proc.pid != os.getpgrp()  # start(): a group of its own

    assert stop(proc, timeout=15) == 7
    assert not group_alive(proc.pid)
    assert [p.pid for p in tree if _alive(p)] == []
    assert _marked(value) == []


IGNORES_SIGTERM = r"""
import signal, subprocess
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited: the child ignores it too
subprocess.Popen(["sleep", "300"])
print("ready", flush=True)
while True:
    signal.pause()
"""


def test_stop_escalates_to_sigkill_when_the_group_ignores_sigterm(tmp_path, marked):
    value, env = marked
    log = tmp_path / "stubborn.log"
    proc = start([sys.executable, "-c", IGNORES_SIGTERM], env=env, log=log)
    wait_until(_log_says(log, "ready"), proc=proc, timeout=60, interval=0.05, what="stubborn leader", log=log)
    child = psutil.Process(proc.pid).children()[0]
    t0 = time.monotonic()
    status = stop(proc, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert status == -signal.SIGKILL
    # SIGTERM had its full second; after SIGKILL, no waiting for a group that is already gone
    assert 1.0 <= elapsed < 6.0, elapsed
    assert not group_alive(proc.pid) and not _alive(child)
    assert _marked(value) == []


def test_running_reports_a_server_that_exits_before_it_is_ready(tmp_path, marked):
    _, env = marked
    log = tmp_path / "early-exit.log"
    cmd = [sys.executable, "-c", "import sys; print('cannot bind: address in use (test)', flush=True); sys.exit(3)"]
    with pytest.raises(ProcessError) as exc, running(cmd, ready=lambda: False, env=env, log=log, timeout=60,
                                                     what="toy server"):
        pytest.fail("running() yielded a server that never became ready")
    assert "toy server exited with status 3" in str(exc.value)
    assert "cannot bind: address in use (test)" in str(exc.value)  # the log's tail


def test_wait_until_reports_a_timeout_with_the_log_tail(tmp_path):
    log = tmp_path / "slow.log"
    log.write_text("still loading the models\n")
    with pytest.raises(ProcessError, match=r"(?s)slow server not ready after 0 s.*still loading the models"):
        wait_until(lambda: False, timeout=0.3, interval=0.05, what="slow server", log=log)


def test_running_serves_then_stops_the_server(tmp_path, marked):
    value, env = marked
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with running(cmd, ready=http_ok(f"http://127.0.0.1:{port}/"), env=env, cwd=tmp_path,
                 log=tmp_path / "http.log", timeout=60) as proc:
        assert not port_is_free(port)
        assert [p.pid for p in _marked(value)] == [proc.pid]
    assert proc.returncode is not None and not group_alive(proc.pid)
    assert port_is_free(port)
    assert _marked(value) == []


# The forwarder: a process that runs the grandchild with run_forwarding_signals, as `cvm serve`
# runs `bentoml serve`, and exits with what it returns.
FORWARDER = r"""
import sys
from base.processes import run_forwarding_signals
sys.exit(run_forwarding_signals([sys.executable, "-c", sys.argv[1], *sys.argv[2:]]))
"""
# The grandchild: says where it runs, starts a sleep in its group (unless "alone"), and on
# SIGTERM says so and exits with status 5 ("exit-5") or is killed by the signal ("by-signal").
GRANDCHILD = r"""
import os, signal, subprocess, sys
mode, company = sys.argv[1], sys.argv[2]

def term(signum, frame):
    print(f"grandchild got signal {signum}", flush=True)
    if mode == "exit-5":
        sys.exit(5)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

signal.signal(signal.SIGTERM, term)
sleeper = subprocess.Popen(["sleep", "300"]).pid if company == "with-sleep" else 0
print(f"ready {os.getpid()} {os.getpgrp()} {sleeper}", flush=True)
while True:
    signal.pause()
"""


def _ready_line(log: Path) -> tuple[int, int, int]:
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith("ready "))
    pid, pgid, sleeper = (int(x) for x in line.split()[1:])
    return pid, pgid, sleeper


@pytest.mark.parametrize(("mode", "status"), [("exit-5", 5), ("by-signal", 128 + signal.SIGTERM)])
def test_run_forwarding_signals_passes_sigterm_to_the_group(tmp_path, marked, mode, status):
    """SIGTERM to the forwarder only: the grandchild's whole group gets it and is gone; the
    forwarder exits with the grandchild's status, 128 + N when signal N killed it."""
    value, env = marked
    log = tmp_path / "forward.log"
    proc = start([sys.executable, "-c", FORWARDER, GRANDCHILD, mode, "with-sleep"], env=env, cwd=REPO, log=log)
    try:
        wait_until(_log_says(log, "ready "), proc=proc, timeout=60, interval=0.05, what="forwarder", log=log)
        pid, pgid, sleeper = _ready_line(log)
        assert pgid == pid != proc.pid  # the grandchild leads a group of its own
        assert psutil.Process(sleeper).ppid() == pid and os.getpgid(sleeper) == pgid
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == status
    finally:
        stop(proc, timeout=5)
    assert f"grandchild got signal {signal.SIGTERM}" in log.read_text()
    assert not group_alive(pgid)
    assert _marked(value) == []


def test_run_forwarding_signals_child_dies_with_a_killed_forwarder(tmp_path, marked):
    """A forwarder killed by SIGKILL cannot forward: the death signal (PR_SET_PDEATHSIG)
    gives the server SIGTERM all the same."""
    value, env = marked
    log = tmp_path / "orphan.log"
    proc = start([sys.executable, "-c", FORWARDER, GRANDCHILD, "exit-5", "alone"], env=env, cwd=REPO, log=log)
    try:
        wait_until(_log_says(log, "ready "), proc=proc, timeout=60, interval=0.05, what="forwarder", log=log)
        pid, _, _ = _ready_line(log)
        grandchild = psutil.Process(pid)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        psutil.wait_procs([grandchild], timeout=30)
        assert not _alive(grandchild)
    finally:
        stop(proc, timeout=5)
    assert f"grandchild got signal {signal.SIGTERM}" in log.read_text()
    assert _marked(value) == []


@pytest.mark.server
def test_cvm_serve_stopped_by_sigterm_leaves_nothing_behind(served_home, tmp_path, marked):
    """SIGTERM to the `cvm serve` process alone, as a process supervisor sends it (the
    service is a plain child here, in the caller's process group, not a session of its
    own): the BentoML server and its worker stop too, nothing of it is left, the port is free."""
    value, env = marked
    port = free_port()
    env = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_URI", "CVM_NO_AUTH")}
    env.update({"CVM_API_KEYS": API_KEY, "CVM_ADMIN_KEYS": ADMIN_KEY, "MLFLOW_DISABLE_TELEMETRY": "true",
                "BENTOML_HOME": str(tmp_path / "bentoml")})
    cmd = [sys.executable, "-m", "cvm.cli", "serve", "--port", str(port), "--dataset", str(served_home.dataset),
           "--catalog", str(served_home.catalog), "--home", str(served_home.home), "--reload-seconds", "0"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(http_ok(f"http://127.0.0.1:{port}/readyz"), proc=proc, timeout=180, what="cvm serve", log=log)
        assert os.getpgid(proc.pid) == os.getpgrp()  # a plain child, as a supervisor starts it
        tree = _marked(value)
        # cvm serve, the BentoML arbiter (a group of its own) and at least one worker
        assert len(tree) >= 3, [p.cmdline() for p in tree]
        assert any(os.getpgid(p.pid) != os.getpgrp() for p in tree)
        os.kill(proc.pid, signal.SIGTERM)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    # BentoML's arbiter (circus) takes SIGTERM as "quit": it stops its workers and `bentoml
    # serve` returns normally, status 0; `cvm serve` exits with the server's status. So a
    # supervisor sees a clean stop, not 143 (killed by SIGTERM) or 1.
    assert status == 0, log.read_text(errors="replace")[-3000:]
    assert [(p.pid, p.cmdline()) for p in _marked(value)] == []
    assert port_is_free(port)
