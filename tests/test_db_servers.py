"""The real database servers the tests and benchmarks use (tests/db_servers.py): the session's
PostgreSQL stores, commits and shows committed rows to another connection; a cluster of a
test's own survives a fast shutdown and a crash (SIGKILL) with its committed rows, and a stop
leaves a free port and no process; Redis answers PING, SET and GET over raw RESP; missing
binaries are a clear error, not a skip."""

from __future__ import annotations

import os
import socket
import uuid

import psutil
import psycopg
import pytest

from base.processes import group_alive, port_is_free
from tests import db_servers
from tests.db_servers import (
    ServerNotInstalled,
    find_postgres_bin,
    redis_command,
    start_postgres,
    start_redis,
    temporary_root,
)

pytestmark = pytest.mark.server


def _tree(pid: int) -> list[psutil.Process]:
    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]


def _assert_gone(procs: list[psutil.Process], port: int, leader_pid: int) -> None:
    assert port_is_free(port), f"port {port} still accepts connections"
    assert not group_alive(leader_pid)
    left = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]


# ------------------------------------------------------------------------------ PostgreSQL


def test_postgres_fixture_stores_and_shares_committed_rows(postgres_url):
    assert postgres_url.startswith("postgresql://cvm@127.0.0.1:") and postgres_url.endswith("/cvm")
    table = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url) as writer, psycopg.connect(postgres_url) as reader:
        assert writer.execute("SELECT current_user, current_database()").fetchone() == ("cvm", "cvm")
        assert writer.execute("SHOW fsync").fetchone() == ("on",)  # durable unless fast=True
        writer.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, name text NOT NULL)")
        writer.execute(f"INSERT INTO {table} VALUES (%s, %s), (%s, %s)", (1, "ann", 2, "bo"))
        assert writer.execute(f"SELECT id, name FROM {table} ORDER BY id").fetchall() == [(1, "ann"), (2, "bo")]
        # not committed yet: the other connection does not see the table's rows
        with pytest.raises(psycopg.errors.UndefinedTable):
            reader.execute(f"SELECT count(*) FROM {table}")
        reader.rollback()
        writer.commit()
        assert reader.execute(f"SELECT id, name FROM {table} ORDER BY id").fetchall() == [(1, "ann"), (2, "bo")]
        reader.rollback()
        writer.execute(f"INSERT INTO {table} VALUES (3, 'cy')")
        writer.commit()
        assert reader.execute(f"SELECT count(*) FROM {table}").fetchone() == (3,)


def test_postgres_database_of_ones_own(postgres_server):
    url = postgres_server.create_database(f"own_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE t (x int)")  # the cvm role owns it
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_postgres_survives_stop_and_crash_and_leaves_nothing_behind():
    with temporary_root("cvm-test-pg-own-") as root:
        pg = start_postgres(root)
        try:
            procs = _tree(pg.proc.pid)
            assert len(procs) > 1  # the postmaster and its workers
            if os.geteuid() == 0:  # postgres does not run as root
                assert {p.username() for p in procs} == {db_servers.PG_OS_USER}
            with pg.connect() as conn:
                conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
                conn.execute("INSERT INTO kept VALUES (1)")
            first_port = pg.port
        finally:
            code = pg.stop()
        assert code == 0  # a clean (fast) shutdown
        _assert_gone(procs, first_port, pg.proc.pid)

        # the same cluster again: its rows are there; committed rows survive a crash
        pg = start_postgres(root)
        conn = other = None
        try:
            conn, other = pg.connect(), pg.connect()
            assert conn.execute("SELECT id FROM kept").fetchall() == [(1,)]
            conn.execute("INSERT INTO kept VALUES (2)")
            conn.commit()
            other.execute("INSERT INTO kept VALUES (3)")  # never committed
            procs = _tree(pg.proc.pid)
            assert pg.stop("kill") == -9
        finally:
            pg.stop()
            for c in (conn, other):
                if c is not None:
                    c.close()
        _assert_gone(procs, pg.port, pg.proc.pid)

        with start_postgres(root) as pg, pg.connect() as conn:
            assert conn.execute("SELECT id FROM kept ORDER BY id").fetchall() == [(1,), (2,)]
        assert "database system was interrupted" in pg.log.read_text()  # it did recover
        _assert_gone([], pg.port, pg.proc.pid)


def test_postgres_missing_binaries_say_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(db_servers, "DEBIAN_PG_BINS", "/nonexistent/*/bin")
    with pytest.raises(ServerNotInstalled, match="install Debian's postgresql package"):
        find_postgres_bin()
    with temporary_root() as root, pytest.raises(ServerNotInstalled):
        start_postgres(root)


# ------------------------------------------------------------------------------ Redis


def _raw(port: int, payload: bytes, expect: bytes) -> bytes:
    """Send raw bytes, read until the reply is as long as ``expect``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(expect):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


def test_redis_answers_ping_set_get_over_raw_resp(redis_url):
    assert redis_url.startswith("redis://127.0.0.1:") and redis_url.endswith("/0")
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    assert _raw(port, b"PING\r\n", b"+PONG\r\n") == b"+PONG\r\n"  # inline command
    key = f"k-{uuid.uuid4().hex}".encode()
    set_cmd = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nvalue\r\n" % (len(key), key)
    assert _raw(port, set_cmd, b"+OK\r\n") == b"+OK\r\n"
    get_cmd = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
    assert _raw(port, get_cmd, b"$5\r\nvalue\r\n") == b"$5\r\nvalue\r\n"
    # the helper speaks the same protocol
    assert redis_command(redis_url, "GET", key) == b"value"
    assert redis_command(redis_url, "GET", b"no-such-key") is None
    assert redis_command(redis_url, "INCR", key + b"-n") == 1
    with pytest.raises(db_servers.RedisError, match="wrong number of arguments"):
        redis_command(redis_url, "GET")


def test_redis_stop_leaves_nothing_behind():
    with temporary_root("cvm-test-redis-own-") as root:
        with start_redis(root) as r:
            assert redis_command(r.port, "PING") == "PONG"
            procs = _tree(r.proc.pid)
        _assert_gone(procs, r.port, r.proc.pid)
        assert not list(root.glob("*.rdb")) and not list(root.glob("appendonly*"))  # nothing persisted


def test_redis_missing_binary_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(db_servers, "REDIS_PATHS", ())
    with temporary_root() as root, pytest.raises(ServerNotInstalled, match="install Debian's redis-server"):
        start_redis(root)
