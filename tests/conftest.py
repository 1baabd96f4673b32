"""Shared fixtures: a tiny hand-built dataset whose features are computed by hand."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import psutil
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
#: Every process the tests start inherits this marker (their environments are built from
#: os.environ); at the end of the session any process still carrying it is one the suite left
#: behind, wherever it is now (re-parented to init included). See pytest_sessionfinish below.
SESSION_MARKER = "CVM_TEST_SESSION"
SESSION_ID = uuid.uuid4().hex
os.environ[SESSION_MARKER] = SESSION_ID
#: how long processes of the session get to exit on their own once the last test is done
LEFTOVER_GRACE_S = 10.0

pytest_plugins = ["tests.mlflow_fixtures", "tests.serving_fixtures"]

AS_OF = date(2024, 3, 1)
T = pd.Timestamp


def tiny_tables() -> dict[str, pd.DataFrame]:
    """Customers A, B, C, D, E around as_of 2024-03-01 (see tests/test_features_golden.py)."""
    tx = pd.DataFrame(
        [
            # customer, order, timestamp, amount, category, discount
            ("A", "o1", T("2023-03-01 10:00"), 10.0, "grocery", 0.0),
            ("A", "o2", T("2024-01-15 12:00"), 20.0, "grocery", 0.0),
            ("A", "o2", T("2024-01-15 12:00"), 5.0, "dairy", 1.0),
            ("A", "o3", T("2024-02-29 23:59"), 30.0, "dairy", 0.0),  # the day before as_of: counts
            ("A", "o4", T("2024-03-01 00:00"), 100.0, "dairy", 0.0),  # 00:00 on as_of: does not count
            ("B", "o5", T("2024-02-01 09:00"), 15.0, "grocery", 0.0),
            ("B", "o5", T("2024-02-01 09:00"), -5.0, "grocery", 0.0),  # a return: data, not an error
            ("B", "o6", T("2024-02-01 18:00"), 10.0, "bakery", 0.0),  # second order, same day
            ("C", "o7", T("2024-03-01 08:00"), 40.0, "grocery", 0.0),  # only after as_of: not a customer yet
            ("D", "o8", T("2022-12-01 12:00"), 50.0, "bakery", 0.0),  # older than the 365-day window
        ],
        columns=["customer_id", "order_id", "timestamp", "amount", "category", "discount"],
    )
    events = pd.DataFrame(
        [
            ("A", T("2024-01-15 11:00"), "add_to_cart"),  # ordered an hour later: not abandoned
            ("A", T("2024-02-28 12:00"), "add_to_cart"),  # next order 36 h later: abandoned
            ("A", T("2024-02-29 10:00"), "add_to_cart"),  # its 24 h end after as_of: not judged
            ("A", T("2024-02-29 22:00"), "view"),
            ("A", T("2024-03-01 00:00"), "view"),  # on as_of: ignored
            ("A", T("2023-10-01 09:00"), "email_open"),  # outside the 90-day event window
            ("B", T("2024-01-31 20:00"), "add_to_cart"),  # ordered 13 h later
            ("B", T("2024-02-10 08:00"), "wishlist"),  # a type not in the list: "other"
            ("E", T("2024-02-10 08:00"), "view"),  # no order: not in the snapshot
        ],
        columns=["customer_id", "timestamp", "event_type"],
    )
    contacts = pd.DataFrame(
        [
            ("A", "camp1", T("2024-02-01")),
            ("A", "camp0", T("2023-01-01")),  # outside the 365-day window
            ("D", "camp1", T("2024-02-01")),
        ],
        columns=["customer_id", "campaign_id", "timestamp"],
    )
    responses = pd.DataFrame(
        [
            ("A", "camp1", T("2024-02-03")),
            ("D", "camp1", T("2024-03-01")),  # on as_of: ignored
        ],
        columns=["customer_id", "campaign_id", "timestamp"],
    )
    customers = pd.DataFrame(
        [
            ("A", T("2023-01-01"), "25-34", "Leeds", 2.0),
            ("A", T("2024-02-15"), None, "York", 3.0),  # newer, age unknown: keep the older age
            ("A", T("2024-03-01"), "35-44", "Hull", 4.0),  # recorded on as_of: not known yet
            ("B", pd.NaT, "45-54", None, None),
        ],
        columns=["customer_id", "updated_at", "age_band", "city", "children"],
    )
    return {"transactions": tx, "events": events, "contacts": contacts, "responses": responses,
            "customers": customers}


def write_dataset(root: Path, tables: dict[str, pd.DataFrame], fmt: str = "parquet",
                  yaml_text: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if fmt == "parquet":
            df.to_parquet(root / f"{name}.parquet", index=False)
        else:
            df.to_csv(root / f"{name}.csv", index=False)
    if yaml_text:
        (root / "dataset.yaml").write_text(yaml_text)
    return root


@pytest.fixture
def home(tmp_path, monkeypatch):
    from base.home import Home

    monkeypatch.setenv("CVM_HOME", str(tmp_path / "home"))
    return Home.from_env()


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "tiny", tiny_tables(),
                         yaml_text="name: tiny\ncategories: [grocery, dairy, bakery]\n")


@pytest.fixture(scope="session")
def duckdb_engine():
    from base.engines import DuckDBEngine

    with DuckDBEngine(threads=2) as engine:
        yield engine


@pytest.fixture(scope="module")
def spark_engine():
    """Spark local[2] for one test module; its JVM is stopped when the module ends, so that
    other modules can check what a command leaves behind (tests/test_cli_lifetimes.py)."""
    from base.engines import SparkEngine

    with SparkEngine(master="local[2]") as engine:
        yield engine


# ------------------------------------------------------------------ database servers

#: fixtures that start a real server: a test using one (directly or through another fixture)
#: is marked ``server`` at collection, so ``-m "not server"`` (make test-fast) leaves it out
SERVER_FIXTURES = {"postgres_server", "postgres_url", "redis_server", "redis_url"}


@pytest.hookimpl(tryfirst=True)  # before the mark plugin deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("server") is None:
            item.add_marker(pytest.mark.server)


def _session_server(start_server, prefix: str):
    """A server started in a fresh root for the session, stopped at its end; a missing binary
    fails the tests that need it (not a skip)."""
    from tests.db_servers import ServerNotInstalled, temporary_root

    with temporary_root(prefix) as root:
        try:
            server = start_server(root)
        except ServerNotInstalled as e:
            pytest.fail(str(e), pytrace=False)
        with server:
            yield server


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL (Debian's package) for the session, on a free loopback port, fsync
    on (tests/db_servers.py). Shared: do not stop it; make a database of your own with
    ``postgres_server.create_database(name)`` when a test needs an empty one. Stopped when
    the session fixtures are torn down, before the check that no process is left."""
    from tests.db_servers import start_postgres

    yield from _session_server(start_postgres, "cvm-test-pg-")


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """``postgresql://cvm@127.0.0.1:PORT/cvm`` of the session's PostgreSQL."""
    return postgres_server.url


@pytest.fixture(scope="session")
def redis_server():
    """One real ``redis-server`` (Debian's package) for the session, no persistence."""
    from tests.db_servers import start_redis

    yield from _session_server(start_redis, "cvm-test-redis-")


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's Redis."""
    return redis_server.url


# ------------------------------------------------------------------ no process left behind


def session_processes() -> list[psutil.Process]:
    """Running processes of this test session other than pytest itself: every one whose
    environment holds the session marker, and pytest's descendants (a child started with an
    environment of its own has no marker). Threads are not processes here; zombies (exited,
    not yet reaped) run nothing and are not counted."""
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        found.update((p.pid, p) for p in psutil.Process(me).children(recursive=True))
    for p in psutil.process_iter():
        if p.pid == me or p.pid in found:
            continue
        try:
            if p.environ().get(SESSION_MARKER) == SESSION_ID:
                found[p.pid] = p
        except psutil.Error:  # gone, a zombie, or another user's
            continue
    alive = []
    for p in found.values():
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


def _kill(procs: list[psutil.Process]) -> None:
    """SIGKILL ``procs``, a whole process group at once where every running member of the
    group is one of them (never pytest's own group), the rest one by one."""
    pids = {p.pid for p in procs}
    groups: dict[int, list[int]] = {}
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                groups.setdefault(os.getpgid(p.pid), []).append(p.pid)
    for pgid, members in groups.items():
        if pgid != os.getpgrp() and set(members) <= pids:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish, which tears the session fixtures down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite ends with no process of its own left: what is still running a few seconds
    after the last teardown is listed, killed, and fails the session."""
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = session_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = session_processes()
    if not left:
        return
    described = []
    for p in left:
        try:
            described.append(f"pid {p.pid} (group {os.getpgid(p.pid)}): {' '.join(p.cmdline())[:300]}")
        except (psutil.Error, OSError):
            described.append(f"pid {p.pid}: (exited meanwhile)")
    _kill(left)
    report = session.config.pluginmanager.get_plugin("terminalreporter")
    title = f"{len(left)} process(es) of this test session still running after it ended: killed"
    if report is not None:
        report.ensure_newline()
        report.write_sep("=", title, red=True, bold=True)
        for line in described:
            report.write_line(line, red=True)
    else:
        print(title, *described, sep="\n", file=sys.stderr)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
