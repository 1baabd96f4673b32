"""Scoring service benchmark: latency at a fixed load, 1,000-customer batches, and bare MLflow serving.

    python benchmarks/bench_serving.py                      # $CVM_HOME or ./cvm_home, about 10 minutes
    python benchmarks/bench_serving.py --home /tmp/svchome --quick          # smoke run, about 3 minutes
    python benchmarks/bench_serving.py --write benchmarks/RESULTS-serving.md

Starts ``cvm serve`` (BentoML, ``--workers`` processes, default 1) on the home's published feature
snapshot and champion models, and measures with ``benchmarks/loadgen.py`` on the same machine:

1. ``POST /score`` for one customer (reasons=true) at a fixed open-loop rate (``--rate``, default
   200 req/s) for ``--duration`` seconds (default 60): p50 / p90 / p99 / max latency, errors and
   achieved rate. Each request's latency runs from its *scheduled* send time, so queueing in the
   client or the server counts (no coordinated omission); ``--warmup`` seconds at the same rate
   come first, unrecorded. Target: p99 <= 15 ms and zero errors.
2. ``POST /recommend`` (k=3) for one customer, same load. Target: p99 <= 20 ms and zero errors.
3. ``POST /score`` with 1,000 distinct customers, one request at a time on one keep-alive
   connection: ``--batch-repeats`` timed requests (default 30) after 3 untimed ones, with
   reasons=true and reasons=false; median and p99 round trip. Target: both <= 150 ms.
4. The churn champion alone under ``mlflow models serve`` (1 uvicorn worker, ``--env-manager
   local``) against our ``/score`` for one customer: (a) p99 at the fixed rate and duration of 1.
   (ours is the run of 1.); (b) the highest open-loop rate with zero errors and p99 <=
   ``--p99-limit`` ms (default 50) from ``loadgen.max_sustained_rps``: rates x1.4 from
   ``--start-rps`` until a step fails, then three bisection steps, ``--step-duration`` seconds
   each; and the ratios ours / MLflow. MLflow gets the customer's feature row in the request
   (``dataframe_split``, the model's signature); ours looks the features up in its online
   snapshot and scores all four champions. The two servers run one after the other.

Request bodies come from a seeded random sample of distinct customer ids of the latest snapshot
(``HOME/features/<dataset>/as_of=*``), so requests hit different customers; the MLflow bodies
carry the same customers' rows. Before each run the bench waits until the server answers probes
as fast as when idle: servers keep working off requests the client gave up on (5 s timeout).
Servers run in their own session; their process trees are stopped at the end, also on errors,
Ctrl-C and SIGTERM. Progress goes to stderr, the table to stdout; ``--write PATH`` also writes it
as Markdown with the command line and machine info. The load generator shares the CPU with the
server (2 cores here), so the numbers are on the pessimistic side; ``--quick`` is a smoke run
(10 s runs, 10 batch requests, 5 s ramp steps).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from base.processes import free_port, http_ok, start, stop, wait_until
from benchmarks.loadgen import LoadResult, max_sustained_rps, run_rate_sync

BIN = Path(sys.executable).parent
CVM = str(BIN / "cvm")
MLFLOW = str(BIN / "mlflow")
CHURN_URI = "models:/cvm-churn@champion"
API_KEY = "bench-serving-" + "k" * 24
BATCH_SIZE = 1_000
BATCH_WARMUPS = 3
RAMP_FACTOR = 1.4
LOADGEN_TIMEOUT_S = 5.0
TARGET_SCORE_P99_MS = 15.0
TARGET_RECOMMEND_P99_MS = 20.0
TARGET_BATCH_MS = 150.0
T0 = time.perf_counter()

Headers = Mapping[str, str] | None


def log(msg: str) -> None:
    """A progress line on stderr, with the seconds since start."""
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = ap.add_argument
    add("--home", type=Path, default=Path(os.environ.get("CVM_HOME", "cvm_home")),
        help="CVM home with a published snapshot and champion models (default: $CVM_HOME or ./cvm_home)")
    add("--dataset", default="completejourney", help="dataset served (default: completejourney)")
    add("--workers", type=int, default=1, help="cvm serve worker processes (default: 1)")
    add("--rate", type=float, default=200.0, help="fixed open-loop rate, req/s (default: 200)")
    add("--duration", type=float, help="measured seconds of each fixed-rate run (default: 60; --quick: 10)")
    add("--warmup", type=float, default=2.0, help="unrecorded warm-up seconds before each open-loop run")
    add("--batch-repeats", type=int,
        help="timed 1,000-customer requests per variant (default: 30; --quick: 10)")
    add("--p99-limit", type=float, default=50.0,
        help="p99 limit in ms of the max sustained rate (default: 50)")
    add("--start-rps", type=float, default=10.0, help="first rate of the max-rate ramp (default: 10)")
    add("--step-duration", type=float, help="seconds per ramp step (default: 10; --quick: 5)")
    add("--bodies", type=int, default=2_000, help="distinct single-customer request bodies (default: 2000)")
    add("--seed", type=int, default=0, help="seed of the customer sample (default: 0)")
    add("--quick", action="store_true", help="smoke run: 10 s runs, 10 batch requests, 5 s ramp steps")
    add("--write", type=Path, metavar="PATH", help="also write the table as Markdown to PATH")
    args = ap.parse_args(argv)
    if args.duration is None:
        args.duration = 10.0 if args.quick else 60.0
    if args.batch_repeats is None:
        args.batch_repeats = 10 if args.quick else 30
    if args.step_duration is None:
        args.step_duration = 5.0 if args.quick else 10.0
    if min(args.duration, args.step_duration, args.rate, args.start_rps, args.p99_limit) <= 0:
        ap.error("durations, rates and --p99-limit must be positive")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if min(args.batch_repeats, args.bodies, args.workers) < 1:
        ap.error("--batch-repeats, --bodies and --workers must be >= 1")
    return args


# ------------------------------------------------------------------------------------------ request bodies


@dataclass
class Workload:
    """Request bodies for every measurement, from one seeded sample of customers."""

    score: list[bytes]  # one customer, reasons=true
    recommend: list[bytes]  # one customer, k=3
    batch_reasons: list[bytes]  # 1,000 distinct customers, reasons=true (3 warm-ups first)
    batch_plain: list[bytes]  # the same customers, reasons=false
    mlflow: list[bytes]  # the customers of ``score``, each with its feature row
    snapshot: Path
    customers: int  # in the snapshot


def latest_snapshot(home: Path, dataset: str) -> Path:
    """The latest ``as_of=*`` directory of the dataset's published feature snapshot."""
    dirs = sorted((home / "features" / dataset).glob("as_of=*"))
    if not dirs:
        raise SystemExit(f"no feature snapshot in {home / 'features' / dataset}: run `make demo` "
                         "or pass --home")
    return dirs[-1]


def churn_inputs(tracking_uri: str) -> tuple[list[str], dict[str, str]]:
    """Snapshot columns the churn champion reads, and the signature's type name of each input column."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(CHURN_URI)
    columns = list(model.unwrap_python_model().model.snapshot_columns())
    schema = model.metadata.get_input_schema()
    types_ = {name: str(t) for name, t in schema.input_types_dict().items()} if schema is not None else {}
    return columns, types_


def mlflow_bodies(rows: pd.DataFrame, columns: Sequence[str], types_: Mapping[str, str]) -> list[bytes]:
    """One ``dataframe_split`` body per row: customer_id and the model's columns, JSON-safe.

    Integer columns the signature declares floating point are sent as floats, like the model's
    input example; ``to_json`` turns NaN into null and dates into ISO strings.
    """
    cols = ["customer_id", *(c for c in columns if c != "customer_id")]
    frame = rows[cols].copy()
    for col in cols:
        if types_.get(col) in ("double", "float") and pd.api.types.is_integer_dtype(frame[col]):
            frame[col] = frame[col].astype("float64")
    split = json.loads(frame.to_json(orient="split", index=False, date_format="iso"))
    return [json.dumps({"dataframe_split": {"columns": split["columns"], "data": [row]}}).encode()
            for row in split["data"]]


def build_workload(args: argparse.Namespace, tracking_uri: str) -> Workload:
    snapshot = latest_snapshot(args.home, args.dataset)
    log(f"customers from {snapshot}; churn model inputs from {CHURN_URI}")
    columns, types_ = churn_inputs(tracking_uri)
    frame = pd.read_parquet(snapshot)
    missing = set(columns) - set(frame.columns)
    if missing:
        raise SystemExit(f"{snapshot} lacks churn model columns {sorted(missing)}")
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame = frame.drop_duplicates("customer_id").reset_index(drop=True)
    ids: list[str] = frame["customer_id"].tolist()
    rng = random.Random(args.seed)
    picked = rng.sample(range(len(ids)), min(args.bodies, len(ids)))
    single = [ids[i] for i in picked]
    batches = [rng.sample(ids, min(BATCH_SIZE, len(ids))) for _ in range(BATCH_WARMUPS + args.batch_repeats)]
    return Workload(
        score=[json.dumps({"customer_ids": [c], "reasons": True}).encode() for c in single],
        recommend=[json.dumps({"customer_id": c, "k": 3}).encode() for c in single],
        batch_reasons=[json.dumps({"customer_ids": b, "reasons": True}).encode() for b in batches],
        batch_plain=[json.dumps({"customer_ids": b, "reasons": False}).encode() for b in batches],
        mlflow=mlflow_bodies(frame.iloc[picked], columns, types_),
        snapshot=snapshot,
        customers=len(ids),
    )


# ------------------------------------------------------------------------------------------ servers


class Server:
    """A server subprocess in a process group of its own (``base.processes``): ``with`` waits until it is
    ready and stops its whole process tree (workers in sessions of their own included)."""

    def __init__(self, name: str, cmd: Sequence[str], env: Mapping[str, str], ready_url: str, log_path: Path,
                 ready_timeout_s: float = 180.0) -> None:
        self.name, self.cmd, self.env, self.ready_url = name, list(cmd), dict(env), ready_url
        self.log_path, self.ready_timeout_s = log_path, ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        log(f"starting {self.name}: {shlex.join(self.cmd)}")
        t = time.perf_counter()
        self.log_path.write_bytes(b"")  # a fresh log: start() appends
        self.proc = start(self.cmd, env=self.env, cwd=REPO, log=self.log_path, die_with_parent=True)
        try:
            wait_until(http_ok(self.ready_url), proc=self.proc, timeout=self.ready_timeout_s, what=self.name,
                       log=self.log_path)  # ProcessError (a RuntimeError) with the log's tail
        except BaseException:
            self.stop()
            raise
        log(f"{self.name} ready after {time.perf_counter() - t:.1f} s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL whatever of the tree is left after 20 s (``base.processes.stop``)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            log(f"stopping {self.name}")
        stop(self.proc)


def server_envs(args: argparse.Namespace, scratch: Path,
                tracking_uri: str) -> tuple[dict[str, str], dict[str, str]]:
    """Environments of ``cvm serve`` and of ``mlflow models serve`` (which runs ``uvicorn`` from PATH)."""
    base = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cvm = {**base, "CVM_API_KEYS": API_KEY, "BENTOML_HOME": str(scratch / "bentoml"),
           "CVM_HOME": str(args.home)}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CVM_API_KEYS_FILE", "CVM_ADMIN_KEYS"):
        cvm.pop(var, None)
    mlflow = {**base, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}
    return cvm, mlflow


# ------------------------------------------------------------------------------------------ measurements


@dataclass
class Row:
    """One line of the table. Latencies in ms; ``met`` is None when the row has no target."""

    measurement: str
    server: str
    load: str
    requests: int | None = None
    p50: float = math.nan
    p90: float = math.nan
    p99: float = math.nan
    max: float = math.nan
    rps: float = math.nan
    errors: int | None = None
    target: str = "-"
    met: bool | None = None
    ratio_p99: float | None = None  # the ratio row only
    ratio_rps: float | None = None
    numbers: bool = True  # False: the summary rows, without latency cells


def post(url: str, body: bytes, headers: Headers = None, timeout_s: float = 30.0) -> tuple[int, bytes]:
    """POST JSON on a fresh connection: (HTTP status, or 0 on a transport error; response body)."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:  # refused, reset, timed out
        return 0, repr(exc).encode()


def preflight(url: str, body: bytes, headers: Headers, expect: str) -> None:
    """One request that must answer 200 with ``expect`` in its body; else stop with the answer."""
    status, data = post(url, body, headers)
    if status != 200 or expect.encode() not in data:
        raise SystemExit(f"{url} answered {status}: {data[:2000].decode(errors='replace')}")


@dataclass
class Probe:
    """A cheap request telling when a server is idle again."""

    url: str
    body: bytes
    headers: Headers
    idle_ms: float = math.nan  # median round trip when idle, from ``calibrate``

    def latency_ms(self) -> float:
        """Round trip of one request; inf if it fails."""
        t = time.perf_counter()
        status, _ = post(self.url, self.body, self.headers)
        return (time.perf_counter() - t) * 1e3 if status == 200 else math.inf

    def calibrate(self, n: int = 7) -> None:
        self.idle_ms = statistics.median(self.latency_ms() for _ in range(n))

    def settle(self, timeout_s: float = 300.0) -> None:
        """Wait until 3 probes in a row answer within 3x the idle time + 20 ms.

        Requests the load generator gave up on stay queued in the server, which keeps working them
        off; without this the next run would measure that backlog.
        """
        limit, t0, good = 3 * self.idle_ms + 20, time.perf_counter(), 0
        while good < 3:
            if time.perf_counter() - t0 > timeout_s:
                log(f"  server still busy after {timeout_s:.0f} s; measuring anyway")
                return
            good = good + 1 if self.latency_ms() <= limit else 0
            if good < 3:
                time.sleep(0.1)
        if (waited := time.perf_counter() - t0) > 1:
            log(f"  waited {waited:.1f} s for the server to work off abandoned requests")


@dataclass
class Endpoint:
    """Where and what to send, and how to tell the server is idle."""

    url: str
    bodies: Sequence[bytes]
    headers: Headers
    probe: Probe


def fixed_rate(name: str, ep: Endpoint, args: argparse.Namespace) -> LoadResult:
    """Open loop at ``--rate`` for ``--duration`` seconds after ``--warmup`` unrecorded seconds."""
    ep.probe.settle()
    log(f"{name}: {args.rate:g} req/s for {args.duration:g} s (+{args.warmup:g} s warm-up)")
    r = run_rate_sync(ep.url, ep.bodies, args.rate, args.duration, headers=ep.headers, warmup_s=args.warmup,
                      timeout_s=LOADGEN_TIMEOUT_S)
    s = r.summary()
    log(f"  p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms, {r.achieved_rps:.1f} req/s, {r.errors} errors")
    return r


def rate_row(measurement: str, server: str, r: LoadResult, args: argparse.Namespace,
             target_p99_ms: float | None) -> Row:
    s = r.summary()
    row = Row(measurement, server, f"open loop {args.rate:g} req/s, {args.duration:g} s", r.sent,
              s["p50"], s["p90"], s["p99"], s["max"], r.achieved_rps, r.errors)
    if target_p99_ms is not None:
        row.target = f"p99 <= {target_p99_ms:g} ms, 0 errors"
        row.met = r.errors == 0 and s["p99"] <= target_p99_ms
    return row


def sequential(url: str, bodies: Sequence[bytes], headers: Headers) -> tuple[list[float], int, float]:
    """POST the bodies one after the other on one keep-alive connection, the first ``BATCH_WARMUPS`` untimed.

    Returns the timed round trips in ms, the errors among them, and their wall time in seconds.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    latencies: list[float] = []
    errors, t_timed = 0, time.perf_counter()
    try:
        for i, body in enumerate(bodies):
            if i == BATCH_WARMUPS:
                t_timed = time.perf_counter()
            t = time.perf_counter()
            try:
                conn.request("POST", parts.path, body=body, headers=hdrs)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
                ok = False
            if i >= BATCH_WARMUPS:
                latencies.append((time.perf_counter() - t) * 1e3)
                errors += not ok
    finally:
        conn.close()
    return latencies, errors, time.perf_counter() - t_timed


def batch_row(ep: Endpoint, bodies: Sequence[bytes], reasons: bool) -> Row:
    what = f"/score {BATCH_SIZE:,} customers, reasons={str(reasons).lower()}"
    ep.probe.settle()
    log(f"{what}: {len(bodies) - BATCH_WARMUPS} sequential requests after {BATCH_WARMUPS} untimed")
    lat, errors, wall = sequential(ep.url, bodies, ep.headers)
    p50, p90, p99 = (float(np.percentile(lat, q)) for q in (50, 90, 99))
    log(f"  median {p50:.1f} ms, p99 {p99:.1f} ms, {errors} errors")
    return Row(f"3. {what}", "cvm serve", "sequential, 1 connection", len(lat), p50, p90, p99, max(lat),
               len(lat) / wall, errors, f"median, p99 <= {TARGET_BATCH_MS:g} ms, 0 errors",
               errors == 0 and p99 <= TARGET_BATCH_MS)


def max_rate(name: str, server: str, ep: Endpoint, args: argparse.Namespace) -> tuple[Row, list[LoadResult]]:
    """``loadgen.max_sustained_rps``: a row with the best rate and its step's requests and latencies."""
    ep.probe.settle()
    log(f"{name}: ramp from {args.start_rps:g} req/s (x{RAMP_FACTOR:g}, {args.step_duration:g} s steps) "
        f"to the highest rate with p99 <= {args.p99_limit:g} ms and 0 errors")
    best, steps = max_sustained_rps(ep.url, ep.bodies, headers=ep.headers, p99_limit_ms=args.p99_limit,
                                    start_rps=args.start_rps, factor=RAMP_FACTOR,
                                    step_duration_s=args.step_duration,
                                    warmup_s=min(args.warmup, args.step_duration),
                                    timeout_s=LOADGEN_TIMEOUT_S)
    for r in steps:
        log(f"  {r.target_rps:7.1f} req/s: p99 {r.percentile(99):8.2f} ms, {r.errors} errors")
    log(f"  max sustained: {best:.1f} req/s")
    row = Row("4b. max sustained rate, single customer", server,
              f"open-loop ramp, {args.step_duration:g} s steps, p99 <= {args.p99_limit:g} ms", rps=best)
    at_best = [r for r in steps if r.target_rps == best]
    if at_best:  # the row shows the best step
        s = at_best[-1].summary()
        row.requests, row.errors = at_best[-1].sent, at_best[-1].errors
        row.p50, row.p90, row.p99, row.max = s["p50"], s["p90"], s["p99"], s["max"]
    return row, steps


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error_note(self, name: str, r: LoadResult) -> None:
        bad = {k: n for k, n in r.status_counts.items() if n and not k.startswith("2")}
        if bad:
            self.notes.append(f"- errors in {name}: {bad}")

    def ramp_note(self, server: str, steps: Sequence[LoadResult]) -> None:
        steps_text = (f"{r.target_rps:.0f} req/s p99 {r.percentile(99):.1f} ms"
                      + (f" ({r.errors} errors)" if r.errors else "") for r in steps)
        self.notes.append(f"- ramp steps, {server}: " + ", ".join(steps_text))


def bench_cvm(args: argparse.Namespace, wl: Workload, env: Mapping[str, str], scratch: Path,
              res: Results) -> tuple[LoadResult, Row, list[LoadResult]]:
    """Measurements 1-3 and our side of 4b: the /score fixed-rate run, the max-rate row, the ramp steps."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    cmd = [CVM, "serve", "--port", str(port), "--dataset", args.dataset, "--home", str(args.home),
           "--reload-seconds", "0", "--workers", str(args.workers)]
    with Server("cvm serve", cmd, env, f"{base}/readyz", scratch / "cvm-serve.log"):
        preflight(f"{base}/score", wl.score[0], auth, '"found":true')
        preflight(f"{base}/recommend", wl.recommend[0], auth, '"offers"')
        preflight(f"{base}/score", wl.batch_plain[0], auth, '"results"')
        probe = Probe(f"{base}/score", wl.score[0], auth)
        probe.calibrate()
        score = Endpoint(f"{base}/score", wl.score, auth, probe)
        recommend = Endpoint(f"{base}/recommend", wl.recommend, auth, probe)

        fixed = fixed_rate("/score single customer", score, args)
        res.rows.append(rate_row("1. /score single customer", "cvm serve", fixed, args,
                                 TARGET_SCORE_P99_MS))
        res.error_note("1. /score single customer", fixed)
        rec = fixed_rate("/recommend single customer", recommend, args)
        res.rows.append(rate_row("2. /recommend single customer", "cvm serve", rec, args,
                                 TARGET_RECOMMEND_P99_MS))
        res.error_note("2. /recommend single customer", rec)
        res.rows.append(batch_row(score, wl.batch_reasons, reasons=True))
        res.rows.append(batch_row(score, wl.batch_plain, reasons=False))
        best, steps = max_rate("cvm serve /score", "cvm serve", score, args)
    return fixed, best, steps


def bench_mlflow(args: argparse.Namespace, wl: Workload, env: Mapping[str, str], scratch: Path,
                 res: Results) -> tuple[LoadResult, Row, list[LoadResult]]:
    """MLflow's side of 4a and 4b: the churn champion alone under ``mlflow models serve``."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [MLFLOW, "models", "serve", "-m", CHURN_URI, "--env-manager", "local", "-h", "127.0.0.1",
           "-p", str(port), "--workers", "1"]
    with Server("mlflow models serve", cmd, env, f"{base}/ping", scratch / "mlflow-serve.log"):
        preflight(f"{base}/invocations", wl.mlflow[0], None, "churn_probability")
        probe = Probe(f"{base}/invocations", wl.mlflow[0], None)
        probe.calibrate()
        invocations = Endpoint(f"{base}/invocations", wl.mlflow, None, probe)
        # the ramp first: if the fixed rate overloads the server, nothing has to wait for its backlog
        best, steps = max_rate("mlflow /invocations", "mlflow models serve", invocations, args)
        fixed = fixed_rate("mlflow /invocations single customer", invocations, args)
        res.error_note("4a. mlflow /invocations", fixed)
    return fixed, best, steps


def benchmark(args: argparse.Namespace, scratch: Path) -> tuple[Results, Workload]:
    db = args.home / "mlflow" / "mlflow.db"
    if not db.exists():
        raise SystemExit(f"no MLflow registry at {db}; run `make demo` or pass --home")
    tracking_uri = f"sqlite:///{db}"
    wl = build_workload(args, tracking_uri)
    cvm_env, mlflow_env = server_envs(args, scratch, tracking_uri)
    res = Results()
    ours_fixed, ours_max, ours_steps = bench_cvm(args, wl, cvm_env, scratch, res)
    ml_fixed, ml_max, ml_steps = bench_mlflow(args, wl, mlflow_env, scratch, res)

    res.rows.append(rate_row("4a. churn score, single customer (load of 1.)", "mlflow models serve", ml_fixed,
                             args, None))
    res.rows += [ours_max, ml_max]
    ml_p99 = ml_fixed.percentile(99)
    if not ml_fixed.latencies_ms:
        res.notes.append(f"- 4a: mlflow models serve answered no request within {LOADGEN_TIMEOUT_S:g} s at "
                         f"{args.rate:g} req/s (over its capacity), so there is no p99 ratio")
    res.rows.append(Row("4. ours / mlflow", "ratio", f"p99 at {args.rate:g} req/s; max sustained rate",
                        ratio_p99=ours_fixed.percentile(99) / ml_p99 if ml_p99 > 0 else math.nan,
                        ratio_rps=ours_max.rps / ml_max.rps if ml_max.rps > 0 else math.nan, numbers=False))
    judged = [r for r in res.rows if r.met is not None]
    n_met = sum(bool(r.met) for r in judged)
    res.rows.append(Row("targets met", "", f"{n_met} of {len(judged)}", target="all",
                        met=n_met == len(judged), numbers=False))
    res.ramp_note("cvm serve", ours_steps)
    res.ramp_note("mlflow models serve", ml_steps)
    return res, wl


# ------------------------------------------------------------------------------------------ report

COLUMNS = ["measurement", "server", "load", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s",
           "errors", "target", "met"]
NUMERIC = {"requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s", "errors"}


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,}" if isinstance(x, int) else f"{x:,.{digits}f}"


def cells(row: Row) -> list[str]:
    met = "-" if row.met is None else ("✓" if row.met else "✗")
    if not row.numbers:
        p99, rps = (f"{x:.2f}x" if x is not None and math.isfinite(x) else "-" if x is not None else ""
                    for x in (row.ratio_p99, row.ratio_rps))
        return [row.measurement, row.server, row.load, "", "", "", p99, "", rps, "", row.target, met]
    return [row.measurement, row.server, row.load, fmt(row.requests), fmt(row.p50), fmt(row.p90),
            fmt(row.p99), fmt(row.max), fmt(row.rps, 1), fmt(row.errors), row.target, met]


def text_table(rows: Sequence[Row]) -> str:
    table = [COLUMNS, *(cells(r) for r in rows)]
    widths = [max(len(line[j]) for line in table) for j in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) if name in NUMERIC else c.ljust(w)
                               for name, c, w in zip(COLUMNS, line, widths)).rstrip() for line in table)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "| " + " | ".join("---:" if c in NUMERIC else "---" for c in COLUMNS) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def machine_info(started: str, load_before: float) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for pkg in ("bentoml", "mlflow", "lightgbm", "aiohttp"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10, check=False).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    return [
        f"run: {started}, repo {commit}",
        (f"machine: {cpu}, {os.cpu_count()} cores ({platform.machine()}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.system()} {platform.release()}"),
        f"software: Python {platform.python_version()}, {', '.join(versions)}",
        (f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}; "
        "the load generator runs on the same cores as the server"),
    ]


def notes(args: argparse.Namespace, wl: Workload) -> list[str]:
    return [
        (f"- customers: seeded sample (seed {args.seed}) of {len(wl.score):,} distinct ids of "
        f"{wl.customers:,} in {wl.snapshot}; single-customer /score with reasons=true, /recommend with k=3; "
        f"each batch request a fresh sample of {BATCH_SIZE:,}"),
        (f"- cvm serve: {args.workers} worker(s), --reload-seconds 0, API-key auth; mlflow models serve: "
        f"{CHURN_URI} alone, 1 uvicorn worker, --env-manager local, the customer's feature row in each "
        "request"),
        ("- open-loop latency runs from each request's scheduled send time (loadgen.py), after "
        f"{args.warmup:g} s unrecorded warm-up; batches: round trip on one keep-alive connection"),
        (f"- errors: non-2xx answers and requests unanswered after {LOADGEN_TIMEOUT_S:g} s; percentiles cover "
        "answered requests. Before each run the bench waits until the server answers probes as fast as "
        "when idle"),
        ("- 4a compares with row 1 (ours at the same load). Ratio row, ours / mlflow: p99 (< 1: ours faster) "
        "and max sustained rate (> 1: ours higher)"),
    ]


def report(args: argparse.Namespace, res: Results, wl: Workload, machine: Sequence[str]) -> tuple[str, str]:
    """The plain-text report for stdout and the Markdown one for ``--write``."""
    title = (f"Serving benchmark ({args.dataset}; fixed-rate runs {args.rate:g} req/s for "
             f"{args.duration:g} s; {args.batch_repeats} batch requests per variant"
             f"{'; --quick' if args.quick else ''})")
    lines = [*notes(args, wl), *res.notes]
    command = shlex.join(["python", "benchmarks/bench_serving.py", *args.argv])
    text = "\n".join([title, "", text_table(res.rows), "", *lines, "", *machine])
    md = "\n".join([title, "", markdown_table(res.rows), "", *lines, "", f"command: `{command}`  ",
                    *(f"{m}  " for m in machine[:-1]), machine[-1], ""])
    return text, md


# ------------------------------------------------------------------------------------------ main


def _raise_interrupt(signum: int, frame: types.FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.home = args.home.resolve()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the servers too
    load_before = os.getloadavg()[0]
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="cvm-bench-serving-") as tmp:
        try:
            res, wl = benchmark(args, Path(tmp))
        except KeyboardInterrupt:
            log("interrupted; servers stopped")
            return 130
    text, md = report(args, res, wl, machine_info(started, load_before))
    print(text)
    if args.write:
        args.write.write_text(md)
        log(f"written to {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
