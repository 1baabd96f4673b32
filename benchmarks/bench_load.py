"""Load benchmark of `cvm serve` on loopback: saturation, a soak, workers and batching.

    python benchmarks/bench_load.py --home cvm_home --write benchmarks/RESULTS-load.md   (make bench-load)
    python benchmarks/bench_load.py --quick                                               (a smoke run)

Needs a home with champions and a published snapshot (``make demo``) and ``wrk``
(``apt-get install wrk``). Against `/score` and `/recommend` (one customer per request,
2,000 distinct customers, seeded):

1. **Saturation, wrk** (closed loop): 1, 2, 4, 8, 16, 32 connections for --step seconds
   each; the highest rate whose p99 is <= 20 ms with no error or non-2xx answer.
2. **Saturation, open loop** (``benchmarks/loadgen.py``: requests sent on a schedule,
   latency counted from the scheduled time, so a slow server cannot slow the client
   down): rates x1.4 from 50 req/s; the highest with p99 <= 20 ms and zero errors.
3. **Soak**: --soak seconds (default 600) at 70 % of the open-loop /score maximum, half
   /score and half /recommend; errors, p99 per minute, and the resident memory of the
   service's process tree at the start and the end (sampled every 10 s).
4. **Workers**: the open-loop /score maximum with ``--workers 2``.
5. **Batching**: per-customer cost of one request for 1, 10, 100 and 1,000 customers.

The load generator runs on the same 2 cores as the service: every figure includes
that contention. Prints one table; ``--write FILE`` writes it as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from base.processes import free_port
from benchmarks.bench_serving import API_KEY, CVM, Server, latest_snapshot, post, server_envs
from benchmarks.loadgen import max_sustained_rps, run_rate_sync

P99_LIMIT_MS = 20.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bodies(home: Path, dataset: str, n: int = 2000, seed: int = 0) -> tuple[list[bytes], list[bytes], list[str]]:
    import random

    import pandas as pd

    ids = pd.read_parquet(latest_snapshot(home, dataset), columns=["customer_id"])["customer_id"].astype(str)
    ids = sorted(set(ids))
    rng = random.Random(seed)
    picked = rng.sample(ids, min(n, len(ids)))
    score = [json.dumps({"customer_ids": [c], "reasons": True}).encode() for c in picked]
    rec = [json.dumps({"customer_id": c, "k": 3}).encode() for c in picked]
    return score, rec, ids


# ------------------------------------------------------------------------------------ wrk
_LUA = """
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["Authorization"] = "Bearer %s"}, bodies[i])
end
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk_run(url: str, body_file: Path, connections: int, seconds: float, scratch: Path) -> dict:
    script = scratch / f"wrk-{body_file.stem}.lua"
    script.write_text(_LUA % (body_file, API_KEY))
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(seconds)}s", "--latency", "--timeout", "5s",
           "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1))
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    sock = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)) \
        if "Socket errors" in out else 0
    return {"connections": connections, "rps": rps, "p50": p50, "p99": p99, "errors": non2xx + sock}


def wrk_ramp(url: str, body_file: Path, seconds: float, scratch: Path) -> tuple[dict | None, list[dict]]:
    steps = []
    for c in (1, 2, 4, 8, 16, 32):
        r = wrk_run(url, body_file, c, seconds, scratch)
        log(f"  wrk c={c:2d}: {r['rps']:7.1f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
            f"{r['errors']} errors")
        steps.append(r)
        if r["p99"] > 4 * P99_LIMIT_MS:
            break
    ok = [r for r in steps if r["p99"] <= P99_LIMIT_MS and r["errors"] == 0]
    return (max(ok, key=lambda r: r["rps"]) if ok else None), steps


# ------------------------------------------------------------------------------------ helpers
def tree_rss(pid: int) -> float:
    try:
        p = psutil.Process(pid)
        return sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]) / 1e6
    except psutil.Error:
        return float("nan")


def open_loop_max(url: str, bodies_: list[bytes], step: float) -> tuple[float, list]:
    best, steps = max_sustained_rps(url, bodies_, headers=AUTH, p99_limit_ms=P99_LIMIT_MS, start_rps=50,
                                    factor=1.4, step_duration_s=step, warmup_s=2.0, timeout_s=5.0)
    for r in steps:
        log(f"  open loop {r.target_rps:7.1f} req/s: p99 {r.percentile(99):.2f} ms, {r.errors} errors")
    return best, steps


def soak(base: str, score: list[bytes], rec: list[bytes], rate: float, seconds: float, pid: int) -> dict:
    """Half /score, half /recommend, in one-minute slices (p99 per minute), RSS every 10 s."""
    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            rss.append((time.monotonic() - t0, tree_rss(pid)))
            stop.wait(10)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    minutes, errors, sent = [], 0, 0
    remaining = seconds
    while remaining > 0:
        chunk = min(60.0, remaining)
        other: dict = {}
        t = threading.Thread(target=lambda out=other, seconds=chunk: out.update(r=run_rate_sync(
            f"{base}/recommend", rec, rate / 2, seconds, headers=AUTH, warmup_s=0, timeout_s=5.0)))
        t.start()
        rs = run_rate_sync(f"{base}/score", score, rate / 2, chunk, headers=AUTH, warmup_s=0, timeout_s=5.0)
        t.join()
        rr = other["r"]
        minutes.append(max(rs.percentile(99), rr.percentile(99)))
        errors += rs.errors + rr.errors
        sent += rs.sent + rr.sent
        log(f"  soak minute {len(minutes)}: p99 /score {rs.percentile(99):.2f} ms, /recommend "
            f"{rr.percentile(99):.2f} ms, {rs.errors + rr.errors} errors, RSS {rss[-1][1]:.0f} MB")
        remaining -= chunk
    stop.set()
    th.join()
    rss.append((seconds, tree_rss(pid)))
    return {"minutes": minutes, "errors": errors, "sent": sent, "rss_start": rss[0][1], "rss_end": rss[-1][1],
            "rss_max": max(r for _, r in rss)}


def batching(base: str, ids: list[str], repeats: int = 15) -> list[dict]:
    import random

    rng = random.Random(1)
    rows = []
    for size in (1, 10, 100, 1000):
        times = []
        for _ in range(repeats):
            body = json.dumps({"customer_ids": rng.sample(ids, size), "reasons": False}).encode()
            t = time.perf_counter()
            status, _ = post(f"{base}/score", body, AUTH)
            times.append((time.perf_counter() - t) * 1e3)
            assert status == 200
        med = statistics.median(times)
        rows.append({"customers": size, "median_ms": med, "per_customer_ms": med / size})
        log(f"  {size:5d} customers per request: {med:.2f} ms, {med / size:.3f} ms per customer")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("CVM_HOME", "cvm_home")))
    ap.add_argument("--dataset", default="completejourney")
    ap.add_argument("--step", type=float, default=15.0, help="seconds per ramp step")
    ap.add_argument("--soak", type=float, default=600.0, help="soak seconds (default 600)")
    ap.add_argument("--quick", action="store_true", help="5 s steps, 60 s soak")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.step, args.soak = 5.0, 60.0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if not (args.home / "online").exists():
        raise SystemExit(f"{args.home} has no published snapshot: run `make demo` first (or pass --home)")
    scratch = Path(tempfile.mkdtemp(prefix="cvm-load-"))
    env, _ = server_envs(argparse.Namespace(home=args.home.resolve()), scratch, "")
    score, rec, ids = bodies(args.home, args.dataset)
    score_file, rec_file = scratch / "score.jsonl", scratch / "recommend.jsonl"
    score_file.write_bytes(b"\n".join(score) + b"\n")
    rec_file.write_bytes(b"\n".join(rec) + b"\n")
    res: dict = {}
    for workers in (1, 2):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [CVM, "serve", "--port", str(port), "--dataset", args.dataset, "--home", str(args.home),
               "--reload-seconds", "0", "--workers", str(workers)]
        with Server(f"cvm serve --workers {workers}", cmd, env, f"{base}/readyz", scratch / f"serve-{workers}.log") \
                as srv:
            for _ in range(200):  # warm up
                post(f"{base}/score", score[0], AUTH)
            if workers == 1:
                for name, f in (("score", score_file), ("recommend", rec_file)):
                    log(f"wrk ramp /{name}")
                    res[f"wrk_{name}"] = wrk_ramp(f"{base}/{name}", f, args.step, scratch)
                log("open-loop ramp /recommend")
                res["open_recommend"] = open_loop_max(f"{base}/recommend", rec, args.step)
            log(f"open-loop ramp /score, {workers} worker(s)")
            res[f"open_score_{workers}"] = open_loop_max(f"{base}/score", score, args.step)
            if workers == 1:
                rate = 0.7 * res["open_score_1"][0]
                log(f"soak: {args.soak:.0f} s at {rate:.0f} req/s (70 % of the open-loop /score maximum)")
                res["soak"] = {**soak(base, score, rec, rate, args.soak, srv.proc.pid), "rate": rate}
                log("batching: customers per request")
                res["batching"] = batching(base, ids)
    text = render(res, args)
    print(text)
    if args.write:
        args.write.write_text(text)


def render(res: dict, args) -> str:
    out = [(f"Load benchmark (`cvm serve` on loopback; {platform.machine()}, {os.cpu_count()} cores, Python "
           f"{platform.python_version()}; load generator on the same cores; steps of {args.step:g} s)"), "",
           "| measurement | result |", "| --- | --- |"]
    for name in ("score", "recommend"):
        best, steps = res[f"wrk_{name}"]
        trail = "; ".join(f"c={r['connections']}: {r['rps']:.0f}/s p99 {r['p99']:.1f} ms" for r in steps)
        out.append(f"| /{name}, wrk closed loop, highest rate with p99 <= 20 ms and 0 errors | "
                   + (f"{best['rps']:.0f} req/s at {best['connections']} connections (p99 {best['p99']:.1f} ms)"
                      if best else "none") + f" ({trail}) |")
    for key, label in (("open_score_1", "/score, open loop, 1 worker"), ("open_recommend", ("/recommend, open loop, "
                                                                                         "1 worker")),
                       ("open_score_2", "/score, open loop, 2 workers")):
        best, steps = res[key]
        out.append(f"| {label}: highest rate with p99 <= 20 ms and 0 errors | {best:.0f} req/s |")
    s = res["soak"]
    out.append(f"| soak, {args.soak / 60:.0f} min at {s['rate']:.0f} req/s (70 % of the /score maximum) | "
               f"{s['sent']:,} requests, {s['errors']} errors; p99 per minute "
               f"{min(s['minutes']):.1f}-{max(s['minutes']):.1f} ms; RSS start {s['rss_start']:.0f} MB, "
               f"end {s['rss_end']:.0f} MB, max {s['rss_max']:.0f} MB |")
    for b in res["batching"]:
        out.append(f"| {b['customers']:,} customers per /score request (reasons off) | median {b['median_ms']:.1f} ms, "
                   f"{b['per_customer_ms']:.3f} ms per customer |")
    out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
