"""Processes with a lifetime: start a server in its own process group, wait until it is
ready, stop the whole group, find a free port.

A server such as ``bentoml serve`` or ``mlflow server`` is a tree of processes (an
arbiter, uvicorn, workers, job consumers). Signalling only the one process a caller
started leaves the rest running and holding the port, so everything here addresses the
process *group*: ``start`` puts the server in a new session (its own group), ``stop``
signals the group and waits until no member is left. ``run_forwarding_signals`` is the
foreground form ``cvm serve`` uses: SIGTERM and SIGINT are passed on to the server's
group, the call returns when the server has stopped, with its exit status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

#: how long a group has to stop after SIGTERM before it gets SIGKILL
STOP_TIMEOUT_S = 20.0


class ProcessError(RuntimeError):
    """A process exited, or did not become ready, when it should have; the message says which."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux), so that a caller
    killed with SIGKILL does not leave its server behind."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
          log: Path | None = None, die_with_parent: bool = False) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session (its own process group); its output
    goes to ``log`` (appended) or is discarded."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent if die_with_parent else None)  # noqa: PLW1509 - prctl only
    finally:
        if log is not None:
            out.close()  # the child has its own descriptor


def group_alive(pgid: int) -> bool:
    """Is any process of group ``pgid`` still running?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.05)
    return not group_alive(pgid)


def stop(proc: subprocess.Popen, *, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """Stop ``proc`` (started by ``start``) and every process of its group: SIGTERM, then
    SIGKILL for whatever is left after ``timeout`` seconds. Returns the leader's exit status."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    if not _wait_group_gone(pgid, deadline):
        _signal_group(pgid, signal.SIGKILL)
        _wait_group_gone(pgid, time.monotonic() + 10)
    if proc.poll() is None:
        proc.kill()
    return proc.wait(timeout=10)


def wait_until(ready: Callable[[], bool], *, proc: subprocess.Popen | None = None, timeout: float = 120.0,
               interval: float = 0.25, what: str = "the process", log: Path | None = None) -> None:
    """Poll ``ready()`` until it is true; ``ProcessError`` (with the log's tail) when ``proc``
    exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ProcessError(f"{what} exited with status {proc.returncode}{_tail(log)}")
        with contextlib.suppress(Exception):  # not ready yet (connection refused, reset...)
            if ready():
                return
        time.sleep(interval)
    raise ProcessError(f"{what} not ready after {timeout:.0f} s{_tail(log)}")


def http_ok(url: str) -> Callable[[], bool]:
    """A ``ready`` check: ``GET url`` answers 200."""
    import urllib.request

    def check() -> bool:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200

    return check


@contextmanager
def running(cmd: Sequence[str], *, ready: Callable[[], bool] | None = None, env: Mapping[str, str] | None = None,
            cwd: Path | str | None = None, log: Path | None = None, timeout: float = 120.0,
            what: str = "the server") -> Iterator[subprocess.Popen]:
    """``start`` a server, wait until ``ready()``, yield it, ``stop`` its group on the way out."""
    proc = start(cmd, env=env, cwd=cwd, log=log)
    try:
        if ready is not None:
            wait_until(ready, proc=proc, timeout=timeout, what=what, log=log)
        yield proc
    finally:
        stop(proc)


def run_forwarding_signals(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                           cwd: Path | str | None = None) -> int:
    """Run ``cmd`` in the foreground as its own process group and return its exit status.

    SIGTERM and SIGINT received meanwhile are forwarded to the whole group (what a process
    supervisor or Ctrl-C expects); once the leader has exited, any member still running is
    stopped too, so the port is free when this returns. The child also gets SIGTERM if this
    process dies without a chance to forward (SIGKILL)."""
    proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                            start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509 - prctl only

    def forward(signum: int, _frame: object) -> None:
        _signal_group(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = proc.wait()
                break
            except InterruptedError:  # pragma: no cover - wait is restarted by Python itself
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if group_alive(proc.pid):
            stop(proc)
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


def _tail(log: Path | None, chars: int = 4000) -> str:
    if log is None:
        return ""
    try:
        return ":\n" + log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
