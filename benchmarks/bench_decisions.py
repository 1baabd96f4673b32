"""Closed-loop benchmark: /recommend with every decision logged, /outcomes throughput, and cap
lookups with 10 M decisions already in the log, on SQLite and on PostgreSQL.

    python benchmarks/bench_decisions.py                     # $CVM_HOME or ./cvm_home (make demo first)
    python benchmarks/bench_decisions.py --quick             # smoke run: 10 s phases, 200 k prefilled
    python benchmarks/bench_decisions.py --write benchmarks/RESULTS-decisions.md

Starts ``cvm serve`` on the home's published Complete Journey snapshot and champions, each time
with a fresh decision log (``CVM_DECISIONS_URL``; the home's own log is not touched), and measures
with ``benchmarks/loadgen.py`` on the same machine (2 cores: the load generator competes with the
server, so the figures are pessimistic):

1. ``POST /recommend`` (k=3, a seeded random customer per request), open loop at ``--rate`` req/s
   (default 200) for ``--duration`` s (default 60), 1 worker, SQLite log. Target p99 <= 20 ms,
   zero errors. Latency runs from each request's scheduled time (no coordinated omission).
2. The same with 2 workers at twice the rate. Target: the same.
3. ``POST /outcomes`` in batches of 100 impressions of logged decisions, closed loop, 4
   connections, ``--outcome-seconds`` s: events per second. Target >= 5,000.
4. /recommend as in 1. with ``--prefill`` decisions (default 10 M) already in the log: 10 per
   customer for the dataset's customers inside the caps' windows, the rest spread over 1 M other
   ids; on SQLite, then on PostgreSQL (a real server on loopback, fsync on), and PostgreSQL empty.

Every /recommend answer is a logged decision, so customers reach their caps during a run (each
customer is asked about five times a minute): the figures include the capped answers, as in
production.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from base.processes import free_port
from benchmarks.bench_serving import Server, machine_info, post
from benchmarks.loadgen import LoadResult, run_closed_sync, run_rate_sync

API_KEY = "bench-decisions-" + "k" * 24
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CVM = str(Path(sys.executable).parent / "cvm")
TARGET_P99_MS = 20.0
TARGET_OUTCOMES = 5000.0
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def customers(home: Path, dataset: str) -> list[str]:
    snaps = sorted((home / "features" / dataset).glob("as_of=*"))
    if not snaps:
        raise SystemExit(f"no feature snapshot under {home / 'features' / dataset}: run make demo first")
    return pd.read_parquet(snaps[-1], columns=["customer_id"]).customer_id.astype(str).tolist()


def recommend_bodies(ids: list[str], n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps({"customer_id": rng.choice(ids), "k": 3}).encode() for _ in range(n)]


def prefill(url: str, ids: list[str], total: int, *, chunk: int = 200_000) -> float:
    """``total`` decisions in the log at ``url``: 10 per known customer in the last 30 days,
    the rest over 1 M other ids across the last year. Seconds taken."""
    from base.home import Home
    from scoring.decisions import open_decision_store
    from scoring.decisions.records import DECISION_COLUMNS

    store = open_decision_store(url, Home(Path(tempfile.gettempdir())), "bench")
    rng = np.random.default_rng(0)
    now = time.time_ns() // 1000
    day = 86_400_000_000
    t = time.perf_counter()
    known = np.repeat(np.asarray(ids, dtype=object), 10)
    done = 0
    while done < total:
        n = min(chunk, total - done)
        if done < len(known):
            who = known[done:done + n]
            when = now - rng.integers(1, 30 * day, len(who))
            if len(who) < n:
                extra = n - len(who)
                who = np.concatenate([who, np.char.add("other-", rng.integers(0, 1_000_000, extra).astype(str))
                                      .astype(object)])
                when = np.concatenate([when, now - rng.integers(1, 365 * day, extra)])
        else:
            who = np.char.add("other-", rng.integers(0, 1_000_000, n).astype(str)).astype(object)
            when = now - rng.integers(1, 365 * day, n)
        frame = pd.DataFrame({
            "decision_id": [uuid.uuid4().hex for _ in range(n)], "customer_id": who, "decided_us": when,
            "arm": "policy", "offer_id": rng.choice(["xs-meat", "xs-deli", "ret-save"], n), "channel": "email",
            "pscore": 0.95, "policy_offer_id": None, "offers": "[]", "model_versions": "{}",
            "catalog_version": "bench", "snapshot_version": "bench", "source": "bench", "released": 0})
        frame["policy_offer_id"] = frame["offer_id"]
        store.log_table(frame[list(DECISION_COLUMNS)])
        done += n
        log(f"  prefilled {done:,} / {total:,} decisions")
    store.close()
    return time.perf_counter() - t


def serve(args, scratch: Path, name: str, url: str, workers: int) -> Server:
    env = {**os.environ, "CVM_API_KEYS": API_KEY, "CVM_HOME": str(args.home), "CVM_DECISIONS_URL": url,
           "BENTOML_HOME": str(scratch / "bentoml"), "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    for var in ("MLFLOW_TRACKING_URI", "CVM_API_KEYS_FILE", "CVM_ADMIN_KEYS", "CVM_NO_AUTH"):
        env.pop(var, None)
    port = free_port()
    cmd = [CVM, "serve", "--port", str(port), "--dataset", args.dataset, "--home", str(args.home),
           "--reload-seconds", "0", "--workers", str(workers)]
    server = Server(f"cvm serve ({name})", cmd, env, f"http://127.0.0.1:{port}/readyz", scratch / f"{name}.log")
    server.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return server


def row(name: str, r: LoadResult, target: str, met: bool, **extra) -> dict:
    s = r.summary()
    return {"measurement": name, "requests": r.sent, "p50": s["p50"], "p99": s["p99"], "max": s["max"],
            "rps": r.achieved_rps, "errors": r.errors, "statuses": dict(r.status_counts), "target": target,
            "met": met, **extra}


def recommend_run(args, base: str, bodies: list[bytes], rate: float, name: str) -> dict:
    status, text = post(f"{base}/recommend", bodies[0], AUTH)
    if status != 200 or b"decision_id" not in text:
        raise SystemExit(f"{name}: /recommend preflight answered {status}: {text[:300]!r}")
    log(f"{name}: {rate:.0f} req/s for {args.duration:.0f} s")
    r = run_rate_sync(f"{base}/recommend", bodies, rate, args.duration, headers=AUTH, warmup_s=args.warmup)
    met = r.errors == 0 and r.summary()["p99"] <= TARGET_P99_MS
    log(f"  p50 {r.summary()['p50']:.1f} ms, p99 {r.summary()['p99']:.1f} ms, errors {r.errors}")
    return row(name, r, f"p99 <= {TARGET_P99_MS:.0f} ms, 0 errors", met)


def outcomes_run(args, base: str, decision_ids: list[str]) -> dict:
    counter = iter(range(10**9))

    def body(_: int) -> bytes:
        k = next(counter)
        events = [{"outcome_id": f"bench-{k}-{j}", "decision_id": decision_ids[(k * 100 + j) % len(decision_ids)],
                   "type": "impression", "timestamp": "2026-12-01T12:00:00Z"} for j in range(100)]
        return json.dumps({"outcomes": events}).encode()

    log(f"/outcomes: batches of 100, 4 connections, {args.outcome_seconds:.0f} s")
    r = run_closed_sync(f"{base}/outcomes", body, 4, args.outcome_seconds, headers=AUTH, warmup_s=2.0)
    events = r.achieved_rps * 100
    log(f"  {events:,.0f} events/s, p99 {r.summary()['p99']:.1f} ms per batch, errors {r.errors}")
    return row("3. /outcomes, batches of 100 (4 connections)", r, f">= {TARGET_OUTCOMES:,.0f} events/s",
               r.errors == 0 and events >= TARGET_OUTCOMES, events_per_s=events)


def logged_ids(url: str, limit: int = 20_000) -> list[str]:
    from base.home import Home
    from scoring.decisions import open_decision_store

    store = open_decision_store(url, Home(Path(tempfile.gettempdir())), "bench")
    try:
        return store.decisions()["decision_id"].head(limit).tolist()
    finally:
        store.close()


def run(args) -> tuple[list[dict], list[str]]:
    ids = customers(args.home, args.dataset)
    bodies = recommend_bodies(ids, int((args.duration + args.warmup) * args.rate * 2) + 10)
    rows, notes = [], []
    scratch = Path(tempfile.mkdtemp(prefix="bench-decisions-"))
    sqlite_url = f"sqlite:///{scratch / 'empty.sqlite'}"
    with serve(args, scratch, "sqlite-1w", sqlite_url, 1) as s:
        rows.append(recommend_run(args, s.base, bodies, args.rate, "1. /recommend, SQLite log, 1 worker"))
        if args.only_first:
            return rows, notes
        rows.append(outcomes_run(args, s.base, logged_ids(sqlite_url)))
    with serve(args, scratch, "sqlite-2w", f"sqlite:///{scratch / 'empty2.sqlite'}", 2) as s:
        rows.append(recommend_run(args, s.base, bodies, 2 * args.rate, "2. /recommend, SQLite log, 2 workers"))
    full = f"sqlite:///{scratch / 'full.sqlite'}"
    secs = prefill(full, ids, args.prefill)
    notes.append(f"SQLite prefill of {args.prefill:,} decisions: {secs:.0f} s")
    with serve(args, scratch, "sqlite-full", full, 1) as s:
        rows.append(recommend_run(args, s.base, bodies, args.rate,
                                  f"4a. /recommend, SQLite log with {args.prefill:,} decisions"))
    from tests.db_servers import start_postgres, temporary_root

    with temporary_root() as root, start_postgres(root) as pg:
        empty_pg = pg.create_database("bench_empty")
        with serve(args, scratch, "pg-empty", empty_pg, 1) as s:
            rows.append(recommend_run(args, s.base, bodies, args.rate, "4b. /recommend, PostgreSQL log, empty"))
        full_pg = pg.create_database("bench_full")
        secs = prefill(full_pg, ids, args.prefill)
        notes.append(f"PostgreSQL prefill of {args.prefill:,} decisions: {secs:.0f} s (COPY + upsert)")
        with serve(args, scratch, "pg-full", full_pg, 1) as s:
            rows.append(recommend_run(args, s.base, bodies, args.rate,
                                      f"4c. /recommend, PostgreSQL log with {args.prefill:,} decisions"))
    return rows, notes


def table(rows: list[dict]) -> str:
    head = "| measurement | requests | p50 ms | p99 ms | max ms | achieved | errors | target | met |"
    out = [head, "|" + " --- |" * 9]
    for r in rows:
        achieved = (f"{r['events_per_s']:,.0f} events/s" if "events_per_s" in r else f"{r['rps']:.0f} req/s")
        out.append(f"| {r['measurement']} | {r['requests']:,} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
                   f"{achieved} | {r['errors']} | {r['target']} | {'yes' if r['met'] else 'NO'} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("CVM_HOME", "cvm_home")).resolve())
    p.add_argument("--dataset", default="completejourney")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--outcome-seconds", type=float, default=20.0)
    p.add_argument("--prefill", type=int, default=10_000_000)
    p.add_argument("--quick", action="store_true", help="10 s phases, 200 k prefilled decisions")
    p.add_argument("--write", type=Path)
    p.add_argument("--only-first", action="store_true", help="measurement 1 only (for tuning)")
    args = p.parse_args()
    if args.quick:
        args.duration, args.outcome_seconds, args.prefill = 10.0, 5.0, 200_000
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()[0]
    rows, notes = run(args)
    text = table(rows)
    print(text)
    for n in notes:
        print(f"- {n}")
    if args.write:
        cmd = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        args.write.write_text("\n".join([
            "# Closed-loop decisions: /recommend with logging, /outcomes, a 10 M-decision log", "",
            f"`python {cmd}`", "", *[f"- {m}" for m in machine_info(started, load_before)],
            *[f"- {n}" for n in notes], "", text, "",
            "Statuses per run: " + "; ".join(f"{r['measurement']}: {r['statuses']}" for r in rows), ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
