"""Processes with a lifetime: start a server in its own process group, wait until it is
ready, stop the whole group, find a free port.

A server such as ``bentoml serve`` or ``mlflow server`` is a tree of processes (an
arbiter, uvicorn, workers, job consumers). Signalling only the one process a caller
started leaves the rest running and holding the port, so everything here addresses the
process *group*: ``start`` puts the server in a new session (its own group), ``stop``
signals the group and waits until no member is left. Some servers start workers in
sessions of their own (BentoML's circus arbiter calls ``setsid`` for every worker): those
are outside the group, so ``stop`` also follows the leader's descendants and waits until
they are gone too. ``run_forwarding_signals`` is the foreground form ``cvm serve`` uses:
SIGTERM and SIGINT are passed on to the server's group, the call returns when the server
and its descendants have stopped, with its exit status.
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

import psutil

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


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn``: in the child, before exec, ask for SIGTERM when the parent dies
    (Linux), so that a caller killed with SIGKILL does not leave its server behind.

    ``prctl`` is looked up here, in the parent: loading a library between fork and exec can
    deadlock when another thread of the parent held the loader's lock at the fork. A parent
    that died before the request took effect would never send the signal: the child then
    exits at once. (Linux sends it when the parent *thread* ends: call from a thread that
    lives as long as the child should, as the main thread does.)"""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        pr_set_pdeathsig = 1
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def start(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
          log: Path | None = None, die_with_parent: bool = False) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session (its own process group); its output
    goes to ``log`` (appended) or is discarded."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent() if die_with_parent else None)  # noqa: PLW1509
    finally:
        if log is not None:
            out.close()  # the child has its own descriptor


def group_alive(pgid: int) -> bool:
    """Is any process of group ``pgid`` still there? (An exited leader its parent has not
    reaped yet, a zombie, still counts: ``stop`` reaps it.)"""
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


class _Tree:
    """The descendants of a leader seen so far. One in a session of its own (a BentoML
    worker) is not reached by signals to the leader's group, and once its parent has died
    it can no longer be found from the leader either: it is remembered from earlier looks
    (``psutil.Process`` checks the start time, so a reused pid is not taken for it)."""

    def __init__(self, leader: subprocess.Popen) -> None:
        self.leader_pid = leader.pid
        self.seen: dict[int, psutil.Process] = {}
        self.refresh(leader)

    def refresh(self, leader: subprocess.Popen) -> None:
        roots = [p.pid for p in self.alive()]
        if leader.returncode is None:  # not reaped yet: the pid is still the leader's
            roots.append(self.leader_pid)
        if not roots:
            return
        children: dict[int, list[int]] = {}
        for p in psutil.process_iter(["ppid"]):
            children.setdefault(p.info["ppid"], []).append(p.pid)
        todo = list(roots)
        while todo:
            for pid in children.get(todo.pop(), ()):
                known = self.seen.get(pid)
                if known is None or not known.is_running():
                    with contextlib.suppress(psutil.Error):
                        self.seen[pid] = psutil.Process(pid)
                todo.append(pid)

    def alive(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if _running(p)]

    def signal(self, sig: int) -> None:
        for p in self.alive():
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)


def _running(p: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie runs nothing and holds no port; its parent reaps it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(proc: subprocess.Popen, tree: _Tree, deadline: float) -> bool:
    """Wait until the leader, its group and its descendants are gone; False at ``deadline``.

    The leader is reaped on the way: unreaped, it is a zombie that keeps its group "alive"
    for ``killpg``. Descendants outside the group get SIGTERM once the group is gone, since
    nothing is left to stop them."""
    told_the_rest = False
    next_look = 0.0
    while True:
        proc.poll()
        if time.monotonic() >= next_look:
            tree.refresh(proc)
            next_look = time.monotonic() + 0.5
        group = group_alive(proc.pid)
        rest = tree.alive()
        if not group and not rest:
            return True
        if not group and not told_the_rest:
            tree.signal(signal.SIGTERM)
            told_the_rest = True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, tree: _Tree, timeout: float) -> int:
    _signal_group(proc.pid, signal.SIGTERM)
    if not _wait_gone(proc, tree, time.monotonic() + timeout):
        _signal_group(proc.pid, signal.SIGKILL)
        tree.signal(signal.SIGKILL)
        _wait_gone(proc, tree, time.monotonic() + 10)
    if proc.poll() is None:
        proc.kill()
    return proc.wait(timeout=10)


def stop(proc: subprocess.Popen, *, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """Stop ``proc`` (started by ``start``), every process of its group and every descendant:
    SIGTERM to the group (the leader stops its own workers), then SIGKILL for whatever is
    left after ``timeout`` seconds. Returns the leader's exit status (``-N`` when signal N
    ended it, as ``Popen.returncode`` says)."""
    return _stop(proc, _Tree(proc), timeout)


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
    supervisor or Ctrl-C expects); once the leader has exited, any member or descendant still
    running is stopped too, so the port is free when this returns. The child also gets
    SIGTERM if this process dies without a chance to forward (SIGKILL)."""
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if started:
            _signal_group(started[0].pid, signum)
        else:  # arrived while the child was being started: passed on as soon as it is
            pending.append(signum)

    # the handlers come first: a signal between the start and their installation would end
    # this process by the default action and reach the server only through the death signal
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                                start_new_session=True, preexec_fn=_die_with_parent())  # noqa: PLW1509
    except BaseException:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise
    started.append(proc)
    for signum in pending:
        _signal_group(proc.pid, signum)
    tree = _Tree(proc)
    try:
        while True:
            try:
                code = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:  # look for new workers now and then: found
                tree.refresh(proc)  # later, they may have lost their parent
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if group_alive(proc.pid) or tree.alive():
            _stop(proc, tree, STOP_TIMEOUT_S)
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


def _tail(log: Path | None, chars: int = 4000) -> str:
    if log is None:
        return ""
    try:
        return ":\n" + log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
