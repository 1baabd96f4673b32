"""Real database servers on loopback for tests and benchmarks: PostgreSQL and Redis from
Debian's packages, each in a directory of its own, on a free port of 127.0.0.1.

    from tests.db_servers import start_postgres, start_redis, temporary_root

    with temporary_root("cvm-pg-") as root, start_postgres(root) as pg:
        with psycopg.connect(pg.url) as conn: ...       # postgresql://cvm@127.0.0.1:PORT/cvm

    with temporary_root("cvm-redis-") as root, start_redis(root) as r:
        redis_command(r.url, "SET", "k", "v")             # redis://127.0.0.1:PORT/0

The servers are started with ``base.processes`` (their own process group, the test session's
environment marker inherited), and stopped with every process of theirs.

PostgreSQL refuses to run as root: when this process is root, ``initdb`` and ``postgres`` run
as the unprivileged user ``postgres`` (created by Debian's package) through ``setpriv``, the
cluster's directory is given to that user, and every directory above it must let that user
through (``/tmp/...`` from ``tempfile.mkdtemp`` does; pytest's ``/tmp/pytest-of-root`` does
not: use ``temporary_root``). fsync stays on unless ``fast=True`` (benchmarks that say so).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil

from base.processes import ProcessError, free_port, port_is_free, start, stop, wait_until

HOST = "127.0.0.1"
#: the role and database the application uses (owner of the database, may create databases)
PG_USER = "cvm"
PG_DATABASE = "cvm"
#: the cluster's bootstrap superuser
PG_SUPERUSER = "postgres"
#: the OS user postgres runs as when this process is root
PG_OS_USER = "postgres"
#: where Debian's postgresql-NN packages put the server binaries
DEBIAN_PG_BINS = "/usr/lib/postgresql/*/bin"
#: where Debian's redis-server package puts it, when it is not on PATH
REDIS_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server")
#: the longest path a unix socket may have (sun_path, 108 bytes with its NUL)
_SUN_PATH_MAX = 107
#: how shutdown modes are asked of the postmaster
_PG_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class ServerNotInstalled(RuntimeError):
    """The server's binaries (or the user it must run as) are not on this machine."""


# ------------------------------------------------------------------------------ PostgreSQL


def find_postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``postgres``: the one of ``postgres`` on PATH
    (symlinks followed), else the newest ``/usr/lib/postgresql/<version>/bin``."""
    candidates: list[Path] = []
    for name in ("postgres", "initdb"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(os.path.realpath(found)).parent)
    versioned = []
    for d in Path("/").glob(DEBIAN_PG_BINS.lstrip("/")):
        m = re.fullmatch(r"(\d+)(?:\.(\d+))?", d.parent.name)
        if m:
            versioned.append(((int(m[1]), int(m[2] or 0)), d))
    candidates += [d for _, d in sorted(versioned, reverse=True)]
    for d in candidates:
        if all(os.access(d / exe, os.X_OK) for exe in ("initdb", "postgres")):
            return d
    raise ServerNotInstalled(
        "PostgreSQL's server binaries (initdb, postgres) were found neither on PATH nor under "
        f"{DEBIAN_PG_BINS}: install Debian's postgresql package (apt-get install postgresql)")


def _run_as() -> tuple[list[str], int, int] | None:
    """When root: the command prefix that runs a program as PG_OS_USER, and its uid, gid."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise ServerNotInstalled(
            f"postgres refuses to run as root and there is no user {PG_OS_USER!r} to run it as: "
            "install Debian's postgresql package (it creates the user), or run as another user") from None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ServerNotInstalled("setpriv (util-linux) is needed to run postgres as an unprivileged user")
    prefix = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    return prefix, user.pw_uid, user.pw_gid


def _check_reachable(path: Path, uid: int, gid: int) -> None:
    """Every directory above ``path`` lets ``uid`` through (search permission)."""
    for d in reversed(path.parents):
        st = d.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise ProcessError(
                f"postgres runs as user {PG_OS_USER!r}, which cannot reach {path}: {d} is mode "
                f"{stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}; put the cluster under a "
                "directory it can pass through, e.g. tests.db_servers.temporary_root()")


def postgres_url(port: int, *, user: str = PG_USER, database: str = PG_DATABASE, host: str = HOST) -> str:
    return f"postgresql://{user}@{host}:{port}/{database}"


@dataclass
class PostgresServer:
    """A running ``postgres``; ``url`` is the application's (role ``cvm``, database ``cvm``),
    ``admin_url`` the superuser's. A context manager: stopped (fast shutdown) on the way out."""

    url: str
    admin_url: str
    port: int
    root: Path
    data_dir: Path
    socket_dir: Path | None  # None when root's path is too long for a unix socket
    log: Path
    bin_dir: Path
    proc: subprocess.Popen = field(repr=False)

    def connect(self, url: str | None = None, **kwargs: Any):
        import psycopg

        return psycopg.connect(url or self.url, connect_timeout=10, **kwargs)

    def create_database(self, name: str) -> str:
        """A new empty database owned by ``cvm``; its URL."""
        return create_database(self.url, name)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, mode: str = "fast", *, timeout: float = 60.0) -> int | None:
        """Shut the server down and wait until none of its processes is left; the
        postmaster's exit status. ``mode``: ``fast`` (the default: clients disconnected, a
        shutdown checkpoint), ``smart`` (waits for clients to leave), ``immediate`` (no
        checkpoint: crash recovery at the next start), ``kill`` (SIGKILL to every process,
        what a crash does). Whatever is still there after ``timeout`` is killed."""
        if mode not in (*_PG_STOP_SIGNALS, "kill"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if self.proc.poll() is None:
            # postgres's children call setsid(): they are outside the postmaster's group
            children: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.proc.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if mode == "kill":
                    os.kill(self.proc.pid, signal.SIGKILL)
                    for c in children:
                        with contextlib.suppress(psutil.Error):
                            c.kill()
                else:
                    os.kill(self.proc.pid, _PG_STOP_SIGNALS[mode])
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
            _, left = psutil.wait_procs(children, timeout=10)
            for c in left:
                with contextlib.suppress(psutil.Error):
                    c.kill()
            psutil.wait_procs(left, timeout=10)
        return stop(self.proc, timeout=10)  # whatever else is left of its group, reaped

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_database(url: str, name: str) -> str:
    """Create database ``name`` through ``url`` (a role that may create databases); its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.rsplit("/", 1)[0] + "/" + name


def _accepts(url: str):
    def ready() -> bool:
        import psycopg

        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    return ready


def start_postgres(root: Path, *, fast: bool = False, port: int | None = None, die_with_parent: bool = True,
                   timeout: float = 120.0) -> PostgresServer:
    """Start PostgreSQL with its cluster in ``root/data`` (``initdb`` first when there is none
    yet: a second call with the same ``root`` restarts the same cluster), listening on
    ``127.0.0.1:port`` only (a free port by default) and on a unix socket in ``root/run``,
    trust authentication, UTF8; role and database ``cvm`` created. Returns once it accepts
    connections. ``fast``: fsync, synchronous_commit and full_page_writes off (not durable:
    for benchmarks that say so). ``die_with_parent``: the server is shut down if this process
    dies without stopping it (Linux; call from a thread that lives as long as the server)."""
    root = Path(root).resolve()
    bin_dir = find_postgres_bin()
    as_user = _run_as()
    prefix = as_user[0] if as_user else []
    root.mkdir(parents=True, exist_ok=True)
    data, run = root / "data", root / "run"
    run.mkdir(exist_ok=True)
    if as_user:
        _, uid, gid = as_user
        _check_reachable(root, uid, gid)
        for d in (root, run):
            os.chown(d, uid, gid)
    run.chmod(0o700)
    log = root / "postgres.log"
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        _initdb(prefix, bin_dir, data, root, fast=fast, timeout=timeout)
    socket_dir = run if len(str(run)) + len("/.s.PGSQL.65535.lock") <= _SUN_PATH_MAX else None

    def command(p: int) -> list[str]:
        settings = {
            "listen_addresses": HOST, "port": str(p),
            "unix_socket_directories": str(socket_dir) if socket_dir else "",
            "unix_socket_permissions": "0700",
            "logging_collector": "off", "log_destination": "stderr",
        }
        if fast:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        if die_with_parent and as_user:  # setuid clears the death signal: setpriv sets it after
            extra = ["--pdeathsig=INT", "--"]
        else:
            extra = ["--"] if as_user else []
        return [*prefix, *extra, str(bin_dir / "postgres"), "-D", str(data),
                *(a for k, v in settings.items() for a in ("-c", f"{k}={v}"))]

    proc, p = _start_on_free_port(command, lambda p: _accepts(postgres_url(p, user=PG_SUPERUSER,
                                                                          database="postgres")),
                                  port=port, cwd=root, log=log, what="postgres", timeout=timeout,
                                  die_with_parent=die_with_parent)
    server = PostgresServer(url=postgres_url(p), admin_url=postgres_url(p, user=PG_SUPERUSER, database="postgres"),
                            port=p, root=root, data_dir=data, socket_dir=socket_dir, log=log, bin_dir=bin_dir,
                            proc=proc)
    try:
        _create_role_and_database(server.admin_url)
    except BaseException:
        server.stop()
        raise
    return server


def _initdb(prefix: list[str], bin_dir: Path, data: Path, root: Path, *, fast: bool, timeout: float) -> None:
    log = root / "initdb.log"
    cmd = [*prefix, *(["--"] if prefix else []), str(bin_dir / "initdb"), "-D", str(data),
           "-U", PG_SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"]
    if fast:
        cmd.append("--no-sync")
    with open(log, "ab") as out:
        done = subprocess.run(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=timeout, check=False)
    if done.returncode != 0:
        raise ProcessError(f"initdb exited with status {done.returncode}:\n"
                           + log.read_text(errors="replace")[-4000:])
    # trust, but only from this machine: the unix socket (mode 0700) and loopback
    (data / "pg_hba.conf").write_text(
        "# written by tests/db_servers.py: trust from this machine only\n"
        "local all all trust\n"
        f"host all all {HOST}/32 trust\n"
        "local replication all trust\n"
        f"host replication all {HOST}/32 trust\n")


def _create_role_and_database(admin_url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PG_USER,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(PG_USER)))
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(PG_DATABASE),
                                                                       sql.Identifier(PG_USER)))


# ------------------------------------------------------------------------------ Redis


def find_redis_server() -> Path:
    found = shutil.which("redis-server") or next((p for p in REDIS_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        raise ServerNotInstalled("redis-server was not found: install Debian's redis-server package "
                                 "(apt-get install redis-server)")
    return Path(found)


@dataclass
class RedisServer:
    """A running ``redis-server`` without persistence; ``url`` is ``redis://127.0.0.1:PORT/0``."""

    url: str
    port: int
    root: Path
    log: Path
    proc: subprocess.Popen = field(repr=False)

    def command(self, *args: str | bytes | int) -> Any:
        return redis_command(self.url, *args)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, *, timeout: float = 20.0) -> int | None:
        """SIGTERM (nothing to save), wait until no process of it is left; its exit status."""
        return stop(self.proc, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis(root: Path, *, port: int | None = None, die_with_parent: bool = True,
                timeout: float = 60.0, durable: bool = False) -> RedisServer:
    """Start ``redis-server`` on ``127.0.0.1:port`` (a free port by default), no RDB
    snapshots, no AOF (``durable``: AOF with ``appendfsync always``, every write on disk before
    its reply), working directory ``root``; returns once it answers PING."""
    root = Path(root).resolve()
    exe = find_redis_server()
    root.mkdir(parents=True, exist_ok=True)

    def command(p: int) -> list[str]:
        return [str(exe), "--port", str(p), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(root), "--daemonize", "no", "--protected-mode", "yes",
                *(("--appendonly", "yes", "--appendfsync", "always") if durable else ())]

    def answers(p: int):
        return lambda: redis_command(p, "PING", timeout=2) == "PONG"

    log = root / "redis.log"
    proc, p = _start_on_free_port(command, answers, port=port, cwd=root, log=log, what="redis-server",
                                  timeout=timeout, die_with_parent=die_with_parent)
    return RedisServer(url=f"redis://{HOST}:{p}/0", port=p, root=root, log=log, proc=proc)


class RedisError(RuntimeError):
    """An error reply (``-ERR ...``) from Redis."""


def redis_command(where: str | int, *args: str | bytes | int, timeout: float = 10.0) -> Any:
    """Send one command over RESP to ``where`` (a ``redis://host:port/db`` URL, or a port on
    127.0.0.1) on a new connection; the reply: ``str`` (simple string), ``int``, ``bytes``
    (bulk string), ``None`` (null), ``list`` (array). An error reply raises ``RedisError``."""
    host, port, db = _redis_address(where)
    with socket.create_connection((host, port), timeout=timeout) as s, s.makefile("rb") as f:
        if db:
            s.sendall(_resp_encode("SELECT", db))
            _resp_read(f)
        s.sendall(_resp_encode(*args))
        return _resp_read(f)


def _redis_address(where: str | int) -> tuple[str, int, int]:
    if isinstance(where, int):
        return HOST, where, 0
    m = re.fullmatch(r"redis://([^:/]+):(\d+)(?:/(\d+))?", where)
    if m is None:
        raise ValueError(f"not a redis://host:port/db URL: {where!r}")
    return m[1], int(m[2]), int(m[3] or 0)


def _resp_encode(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def _resp_read(f) -> Any:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a Redis reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        body = f.read(n + 2)
        return body[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError(f"unexpected Redis reply {line!r}")


# ------------------------------------------------------------------------------ shared


def _start_on_free_port(command, ready_for, *, port: int | None, cwd: Path, log: Path, what: str,
                        timeout: float, die_with_parent: bool) -> tuple[subprocess.Popen, int]:
    """Start ``command(port)`` and wait until ``ready_for(port)()``; when the port was picked
    here and someone else took it meanwhile (the server exits saying so), try another one."""
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        p = port if port is not None else free_port(HOST)
        offset = log.stat().st_size if log.exists() else 0
        proc = start(command(p), cwd=cwd, log=log, die_with_parent=die_with_parent)
        try:
            wait_until(ready_for(p), proc=proc, timeout=timeout, interval=0.1, what=f"{what} on port {p}",
                       log=log)
            return proc, p
        except ProcessError:
            stop(proc, timeout=10)
            with open(log, "rb") as f:
                f.seek(offset)
                said = f.read().decode(errors="replace")
            if attempt + 1 < attempts and "Address already in use" in said:
                continue
            raise
        except BaseException:
            stop(proc, timeout=10)
            raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def temporary_root(prefix: str = "cvm-db-") -> Iterator[Path]:
    """A new directory under the system's temporary directory (which an unprivileged server
    user can pass through, unlike pytest's ``/tmp/pytest-of-root``), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_port_free(port: int, *, timeout: float = 10.0) -> bool:
    """Wait until nothing accepts connections on ``127.0.0.1:port``; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not port_is_free(port, HOST):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
