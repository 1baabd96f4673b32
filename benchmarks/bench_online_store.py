"""Benchmark the embedded online store: publish time, single-id and 1,000-id lookup latency.

    python benchmarks/bench_online_store.py                  # 1,000,000 rows x 100 features
    python benchmarks/bench_online_store.py --rows 100000 --features 50

Builds a synthetic snapshot (40 % int, 40 % float with 5 % NaN, 10 % string, 10 % date
features), publishes it, then times ``get`` on random existing ids from a fresh reader
and from a warm one (after ``warm_up``), ``get_many`` on 1,000 random existing ids, and
lookups per second from several threads: the store (one connection behind a lock)
against bare readers with a shared connection or a connection per thread. Prints one
table. Seeded: the same arguments give the same data.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from features.online_store import SQLiteOnlineStore

AS_OF = date(2024, 3, 31)
SEGMENTS = np.array(["bronze", "silver", "gold", "platinum", "dormant", "new", "vip", "churned"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="customers in the snapshot")
    parser.add_argument("--features", type=int, default=100, help="feature columns")
    parser.add_argument("--parts", type=int, default=4, help="Parquet parts in the snapshot")
    parser.add_argument("--lookups", type=int, default=20_000, help="single-id gets timed (>= 10,000)")
    parser.add_argument("--batch", type=int, default=1_000, help="ids per get_many")
    parser.add_argument("--repeats", type=int, default=50, help="get_many calls timed")
    parser.add_argument("--threads", default="1,2,4", help="thread counts for the throughput rows")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput run")
    parser.add_argument("--workdir", type=Path, help="keep the snapshot and store here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def customer_ids(indices: np.ndarray) -> list[str]:
    return [f"C{i:09d}" for i in indices.tolist()]


def feature_kind(j: int) -> str:
    return ("int", "int", "int", "int", "float", "float", "float", "float", "string", "date")[j % 10]


def synthetic_part(rng: np.random.Generator, ids: list[str], features: int) -> pa.Table:
    n = len(ids)
    columns: dict[str, pa.Array] = {"customer_id": pa.array(ids, pa.string()),
                                    "as_of": pa.array(np.full(n, np.datetime64(AS_OF, "D")), pa.date32())}
    for j in range(features):
        kind = feature_kind(j)
        missing = rng.random(n) < 0.05
        if kind == "int":
            values = pa.array(rng.integers(0, 10_000, n))
        elif kind == "float":
            values = pa.array(rng.gamma(2.0, 50.0, n), mask=missing)
        elif kind == "string":
            values = pa.array(SEGMENTS[rng.integers(0, len(SEGMENTS), n)], pa.string(), mask=missing)
        else:
            days = np.datetime64(AS_OF - timedelta(days=730), "D") + rng.integers(0, 730, n)
            values = pa.array(days, pa.date32(), mask=missing)
        columns[f"f{j:03d}_{kind}"] = values
    return pa.table(columns)


def write_snapshot(directory: Path, rows: int, features: int, parts: int, seed: int) -> None:
    """Parts of shuffled customers, as an engine writing in parallel would leave them."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(rows)
    directory.mkdir(parents=True)
    for p, chunk in enumerate(np.array_split(order, parts)):
        part = synthetic_part(rng, customer_ids(chunk), features)
        pq.write_table(part, directory / f"part-{p:05d}.parquet")


def percentiles(samples: list[float], qs: tuple[float, ...]) -> list[float]:
    return np.percentile(np.asarray(samples), qs).tolist()


def time_gets(store: SQLiteOnlineStore, ids: list[str]) -> list[float]:
    """Microseconds per ``get``, one call at a time."""
    clock = time.perf_counter_ns
    out = []
    for cid in ids:
        start = clock()
        row = store.get(cid)
        out.append((clock() - start) / 1e3)
        assert row is not None
    return out


def time_get_many(store: SQLiteOnlineStore, batches: list[list[str]]) -> list[float]:
    """Milliseconds per ``get_many``."""
    out = []
    for ids in batches:
        start = time.perf_counter()
        frame = store.get_many(ids)
        out.append((time.perf_counter() - start) * 1e3)
        assert bool(frame["found"].all())
    return out


class RawReader:
    """A bare read path for the connection-strategy comparison: the two ways to share SQLite.

    ``per_thread``: one connection per thread, no lock. Otherwise one connection shared by
    all threads behind a lock (what ``SQLiteOnlineStore`` does). Both decode rows alike.
    """

    def __init__(self, path: Path, per_thread: bool) -> None:
        self.uri = f"file:{quote(path.as_posix())}?mode=ro&immutable=1"
        self.per_thread = per_thread
        self.local = threading.local()
        self.lock = threading.Lock()
        self.shared = self.connect()
        self.names = [d[0] for d in self.shared.execute("SELECT * FROM features LIMIT 0").description]

    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.uri, uri=True, check_same_thread=False)
        con.execute("PRAGMA mmap_size = 1099511627776")
        return con

    def get(self, customer_id: str) -> dict[str, object] | None:
        query = "SELECT * FROM features WHERE customer_id = ?"
        if self.per_thread:
            con = getattr(self.local, "con", None) or self.connect()
            self.local.con = con
            row = con.execute(query, (customer_id,)).fetchone()
        else:
            with self.lock:
                row = self.shared.execute(query, (customer_id,)).fetchone()
        return None if row is None else dict(zip(self.names, row))


def throughput(get: Callable[[str], object], ids: list[str], threads: int, seconds: float) -> float:
    """Lookups per second summed over ``threads`` threads calling ``get`` in a loop."""
    counts = [0] * threads
    stop = threading.Event()

    def loop(t: int) -> None:
        i = t
        while not stop.is_set():
            get(ids[i % len(ids)])
            i += threads
            counts[t] += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def latency_row(samples: list[float]) -> str:
    p50, p90, p99 = percentiles(samples, (50, 90, 99))
    return f"p50 {p50:.1f} µs  p90 {p90:.1f} µs  p99 {p99:.1f} µs  max {max(samples):,.0f} µs"


def stat_cost_us(path: Path, n: int = 100_000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        os.stat(path)
    return (time.perf_counter() - start) / n * 1e6


def rss_row() -> str:
    """RSS, and how much of it is the mapped store file: page cache, shared and reclaimable."""
    process = psutil.Process()
    mapped = sum(m.rss for m in process.memory_maps(grouped=True) if m.path.endswith(".sqlite"))
    rss = process.memory_info().rss
    return f"{rss / 2**20:,.0f} MB, of which {mapped / 2**20:,.0f} MB is the mapped store file"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, str]]:
    table: list[tuple[str, str]] = []
    snapshot_dir = workdir / "snapshot"
    start = time.perf_counter()
    # In a child process, so the peak RSS reported for publishing is publishing's own.
    child = multiprocessing.get_context("spawn").Process(
        target=write_snapshot, args=(snapshot_dir, args.rows, args.features, args.parts, args.seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"generating the snapshot failed (exit code {child.exitcode})")
    parquet_mb = sum(p.stat().st_size for p in snapshot_dir.iterdir()) / 1e6
    table.append(("generate snapshot (child process)",
                  f"{time.perf_counter() - start:.1f} s ({parquet_mb:,.0f} MB Parquet, {args.parts} parts)"))
    table.append(("RSS before publishing", f"{peak_rss_mb():,.0f} MB"))

    writer = SQLiteOnlineStore(workdir / "online", dataset="bench")
    start = time.perf_counter()
    snapshot = writer.publish(snapshot_dir, as_of=AS_OF)
    seconds = time.perf_counter() - start
    table.append(("publish", (f"{seconds:.1f} s = {args.rows / seconds:,.0f} rows/s "
                             f"({snapshot.path.stat().st_size / 1e6:,.0f} MB SQLite; "
                             f"peak RSS {peak_rss_mb():,.0f} MB)")))
    writer.close()

    rng = np.random.default_rng(args.seed + 1)
    reader = SQLiteOnlineStore(workdir / "online")
    lookups = max(args.lookups, 10_000)
    cold = time_gets(reader, customer_ids(rng.integers(0, args.rows, lookups)))
    table.append((f"get, 1 id, fresh reader ({lookups:,} calls)", latency_row(cold)))
    start = time.perf_counter()
    reader.warm_up()
    table.append(("warm_up (maps the whole file)", f"{time.perf_counter() - start:.2f} s"))
    time_gets(reader, customer_ids(rng.integers(0, args.rows, 2_000)))
    single = time_gets(reader, customer_ids(rng.integers(0, args.rows, lookups)))
    table.append((f"get, 1 id, warm reader ({lookups:,} calls)", latency_row(single)))
    stat_us = stat_cost_us(reader.root / "CURRENT.json")
    table.append(("  of which pointer check (os.stat)", f"{stat_us:.2f} µs"))
    table.append(("RSS of a warm reader", rss_row()))

    batches = [customer_ids(rng.integers(0, args.rows, args.batch)) for _ in range(args.repeats + 3)]
    time_get_many(reader, batches[:3])
    many = time_get_many(reader, batches[3:])
    m50, m99 = percentiles(many, (50, 99))
    table.append((f"get_many, {args.batch:,} ids, warm ({args.repeats} calls)",
                  f"p50 {m50:.1f} ms  p99 {m99:.1f} ms  max {max(many):.1f} ms"))

    ids = customer_ids(rng.integers(0, args.rows, 50_000))
    per_thread, shared = RawReader(snapshot.path, per_thread=True), RawReader(snapshot.path, per_thread=False)
    for threads in (int(t) for t in args.threads.split(",")):
        rates = [throughput(get, ids, threads, args.seconds)
                 for get in (reader.get, shared.get, per_thread.get)]
        table.append((f"get/s from {threads} thread(s)",
                      "store {:,.0f}; bare: shared connection + lock {:,.0f}, connection per thread {:,.0f}"
                      .format(*rates)))
    reader.close()
    return table


def main() -> None:
    args = parse_args()
    print(f"online store: {args.rows:,} rows x {args.features} features, SQLite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} CPUs")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
            rows = run(args, Path(tmp))
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  result")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
