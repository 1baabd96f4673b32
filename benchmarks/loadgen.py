"""HTTP load generator for JSON POST endpoints on loopback (aiohttp, no coordinated omission).

    python benchmarks/loadgen.py http://127.0.0.1:3000/score --body '{"customer_ids":["1"]}' --rps 200
    python benchmarks/loadgen.py URL --body-file bodies.jsonl --concurrency 8 --duration 10
    python benchmarks/loadgen.py URL --header 'Authorization: Bearer X' --find-max --p99-ms 15

Open loop (``run_rate``): request i is due at t0 + i/rps whatever happened to earlier ones and its
latency is measured from that *scheduled* time, so queueing in the client or the server counts.
Closed loop (``run_closed``): N workers each send the next request when the previous one returns;
it measures throughput, its latencies understate what users see under load. ``max_sustained_rps``
ramps the open-loop rate to the highest one meeting a p99 target with zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec

import aiohttp
import numpy as np

Bodies = Sequence[bytes] | Callable[[int], bytes]
P = ParamSpec("P")


@dataclass
class LoadResult:
    """Outcome of one measured phase. ``sent == ok + errors``; latencies are in milliseconds."""

    mode: str  # "rate" or "closed"
    target_rps: float | None  # rate mode
    concurrency: int | None  # closed mode
    duration_s: float  # from the start of the measured phase to max(its scheduled end, last completion)
    sent: int  # requests due in the measured phase (rate mode: including ones refused as "overload")
    ok: int  # 2xx responses
    errors: int  # non-2xx + timeouts + transport errors + overload
    status_counts: dict[str, int] = field(default_factory=dict)  # "200", "503", "timeout", "conn_error", ...
    achieved_rps: float = 0.0  # ok / duration_s
    latencies_ms: list[float] = field(default_factory=list)  # every request that got an HTTP response

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of ``latencies_ms`` in ms; nan when nothing completed."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan

    def summary(self) -> dict[str, float | int]:
        """p50 / p90 / p99 / max / mean latency (ms), achieved_rps, errors, sent, ok."""
        lat = self.latencies_ms
        return {"p50": self.percentile(50), "p90": self.percentile(90), "p99": self.percentile(99),
                "max": max(lat) if lat else math.nan, "mean": float(np.mean(lat)) if lat else math.nan,
                "achieved_rps": self.achieved_rps, "errors": self.errors, "sent": self.sent, "ok": self.ok}


class _Recorder:
    """Accumulates outcomes of measured requests."""

    def __init__(self, *extra_keys: str) -> None:
        self.counts: Counter[str] = Counter({k: 0 for k in ("timeout", "conn_error", *extra_keys)})
        self.latencies_ms: list[float] = []
        self.last_done = 0.0

    def add(self, status: str, start: float, end: float | None) -> None:
        self.counts[status] += 1
        self.last_done = max(self.last_done, end or time.perf_counter())
        if end is not None:  # got an HTTP response (any status)
            self.latencies_ms.append((end - start) * 1e3)

    def result(self, mode: str, rps: float | None, conc: int | None, t_start: float,
               t_end: float) -> LoadResult:
        """Result of a measured phase that started at ``t_start`` and was scheduled to end at ``t_end``."""
        duration = max(t_end, self.last_done) - t_start
        sent = sum(self.counts.values())
        ok = sum(n for s, n in self.counts.items() if s.isdigit() and s.startswith("2"))
        return LoadResult(mode, rps, conc, duration, sent, ok, sent - ok, dict(self.counts),
                          ok / duration if duration > 0 else 0.0, self.latencies_ms)


def _body_fn(bodies: Bodies | bytes) -> Callable[[int], bytes]:
    """Body for request i: ``bodies(i)`` or ``bodies[i % len(bodies)]`` (a lone bytes is one body)."""
    if callable(bodies):
        return bodies
    seq: Sequence[bytes] = [bodies] if isinstance(bodies, bytes) else list(bodies)
    if not seq:
        raise ValueError("bodies is empty")
    return lambda i: seq[i % len(seq)]


def _session(headers: Mapping[str, str] | None, timeout_s: float, limit: int) -> aiohttp.ClientSession:
    """One keep-alive session: JSON content type, total timeout per request, no cookie jar."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 headers={"Content-Type": "application/json", **(headers or {})},
                                 cookie_jar=aiohttp.DummyCookieJar())


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[str, float | None]:
    """POST and read the whole response; (status or error kind, completion time or None)."""
    try:
        async with session.post(url, data=body) as resp:
            await resp.read()
            return str(resp.status), time.perf_counter()
    except TimeoutError:
        return "timeout", None
    except (aiohttp.ClientError, OSError):
        return "conn_error", None


async def run_rate(url: str, bodies: Bodies, rps: float, duration_s: float,
                   headers: Mapping[str, str] | None = None, warmup_s: float = 2.0, timeout_s: float = 5.0,
                   max_in_flight: int = 2000) -> LoadResult:
    """Open loop at ``rps`` for ``duration_s`` after ``warmup_s`` of unrecorded requests at the same rate.

    Request i is due at t0 + i/rps; the scheduler sleeps until the next due time, then launches every
    request that is due. Latency = completion - scheduled time. A request due while ``max_in_flight``
    are outstanding is not sent and is counted as the error "overload".
    """
    if rps <= 0 or duration_s <= 0 or max_in_flight < 1:
        raise ValueError("rps, duration_s and max_in_flight must be positive")
    body = _body_fn(bodies)
    n_warm, n_total = round(warmup_s * rps), round((warmup_s + duration_s) * rps)
    rec = _Recorder("overload")
    pending: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, i: int, due: float) -> None:
        status, end = await _post(session, url, body(i))
        if i >= n_warm:
            rec.add(status, due, end)

    async with _session(headers, timeout_s, max_in_flight) as session:
        t0 = time.perf_counter()
        i = 0
        while i < n_total:
            now = time.perf_counter()
            due = t0 + i / rps
            if due > now:
                await asyncio.sleep(due - now)
                now = time.perf_counter()
            while i < n_total and (due := t0 + i / rps) <= now:
                if len(pending) >= max_in_flight:
                    if i >= n_warm:
                        rec.counts["overload"] += 1
                else:
                    task = asyncio.create_task(one(session, i, due))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                i += 1
        if pending:
            await asyncio.gather(*pending)
    return rec.result("rate", rps, None, t0 + n_warm / rps, t0 + n_total / rps)


async def run_closed(url: str, bodies: Bodies, concurrency: int, duration_s: float,
                     headers: Mapping[str, str] | None = None, warmup_s: float = 2.0,
                     timeout_s: float = 5.0) -> LoadResult:
    """Closed loop: ``concurrency`` workers, each sending its next request when the previous returns.

    Requests started during the first ``warmup_s`` are not recorded; latency is from the actual send.
    """
    if concurrency < 1 or duration_s <= 0:
        raise ValueError("concurrency and duration_s must be positive")
    body = _body_fn(bodies)
    rec = _Recorder()
    counter = itertools.count()

    async def worker(session: aiohttp.ClientSession, t_meas: float, t_end: float) -> None:
        while (start := time.perf_counter()) < t_end:
            status, end = await _post(session, url, body(next(counter)))
            if start >= t_meas:
                rec.add(status, start, end)

    async with _session(headers, timeout_s, concurrency) as session:
        t0 = time.perf_counter()
        t_meas, t_end = t0 + warmup_s, t0 + warmup_s + duration_s
        await asyncio.gather(*(worker(session, t_meas, t_end) for _ in range(concurrency)))
    return rec.result("closed", None, concurrency, t_meas, t_end)


def _sync(fn: Callable[P, Coroutine[Any, Any, LoadResult]]) -> Callable[P, LoadResult]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> LoadResult:
        return asyncio.run(fn(*args, **kwargs))

    wrapper.__name__ = wrapper.__qualname__ = f"{fn.__name__}_sync"
    wrapper.__doc__ = f"``asyncio.run`` wrapper of ``{fn.__name__}`` (same arguments).\n\n{fn.__doc__}"
    return wrapper


run_rate_sync = _sync(run_rate)
run_closed_sync = _sync(run_closed)


def max_sustained_rps(url: str, bodies: Bodies, *, headers: Mapping[str, str] | None = None,
                      p99_limit_ms: float, start_rps: float = 50, factor: float = 1.4,
                      step_duration_s: float = 10, max_rps: float = 5000, warmup_s: float = 2.0,
                      timeout_s: float = 5.0) -> tuple[float, list[LoadResult]]:
    """Highest open-loop rate with zero errors and p99 <= ``p99_limit_ms``, and every step's result.

    Rates go start_rps, start_rps*factor, ... (capped at max_rps) until a step fails; then three
    bisection steps between the last good and the first bad rate. 0.0 if even start_rps fails.
    """
    if factor <= 1 or start_rps <= 0:
        raise ValueError("factor must be > 1 and start_rps > 0")
    results: list[LoadResult] = []

    def passes(rate: float) -> bool:
        r = run_rate_sync(url, bodies, rate, step_duration_s, headers=headers, warmup_s=warmup_s,
                          timeout_s=timeout_s)
        results.append(r)
        return r.errors == 0 and r.percentile(99) <= p99_limit_ms  # nan (nothing completed) fails

    good, bad, rate = 0.0, None, min(start_rps, max_rps)
    while bad is None:
        if passes(rate):
            good = rate
            if rate >= max_rps:
                break
            rate = min(rate * factor, max_rps)
        else:
            bad = rate
    if good > 0 and bad is not None:
        for _ in range(3):
            mid = (good + bad) / 2
            good, bad = (mid, bad) if passes(mid) else (good, mid)
    return good, results


def _table(results: Sequence[LoadResult]) -> str:
    """Aligned plain-text table, one row per result."""
    cols = ["mode", "target", "conc", "secs", "sent", "ok", "errors", "rps", "p50 ms", "p90 ms", "p99 ms",
            "max ms", "mean ms"]
    rows = [cols]
    for r in results:
        s = r.summary()
        rows.append([r.mode, "-" if r.target_rps is None else f"{r.target_rps:.1f}",
                     "-" if r.concurrency is None else str(r.concurrency), f"{r.duration_s:.2f}",
                     str(r.sent), str(r.ok), str(r.errors), f"{r.achieved_rps:.1f}",
                     *(f"{s[k]:.2f}" for k in ("p50", "p90", "p99", "max", "mean"))])
    widths = [max(len(row[j]) for row in rows) for j in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    for r in results:
        bad = {k: n for k, n in r.status_counts.items() if n and not k.startswith("2")}
        if bad:
            lines.append(f"errors at {r.target_rps or r.concurrency}: {bad}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("url", help="endpoint to POST to, e.g. http://127.0.0.1:3000/score")
    add("--body", action="append", default=[], help="JSON body (repeatable; default '{}')")
    add("--body-file", type=Path, help="JSON lines file, one body per line")
    add("--header", action="append", default=[], help="'Name: value' (repeatable)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rps", type=float, help="open loop at this rate")
    mode.add_argument("--concurrency", type=int, help="closed loop with this many workers")
    mode.add_argument("--find-max", action="store_true", help="ramp the rate to the max meeting --p99-ms")
    add("--duration", type=float, default=10.0, help="measured seconds (per step for --find-max)")
    add("--warmup", type=float, default=2.0, help="unrecorded warm-up seconds")
    add("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    add("--max-in-flight", type=int, default=2000, help="open loop: cap on outstanding requests")
    add("--p99-ms", type=float, help="--find-max: p99 latency limit")
    add("--start-rps", type=float, default=50.0, help="--find-max: first rate")
    add("--factor", type=float, default=1.4, help="--find-max: rate multiplier per step")
    add("--max-rps", type=float, default=5000.0, help="--find-max: highest rate tried")
    args = parser.parse_args(argv)

    texts = list(args.body)
    if args.body_file is not None:
        texts += [line for line in args.body_file.read_text().splitlines() if line.strip()]
    try:
        for text in texts:
            json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"a --body / --body-file line is not JSON: {exc}")
    bodies = [t.encode() for t in texts] or [b"{}"]
    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            parser.error(f"header must be 'Name: value': {h}")
        headers[name.strip()] = value.strip()

    common: dict[str, Any] = {"headers": headers, "warmup_s": args.warmup, "timeout_s": args.timeout}
    if args.find_max:
        if args.p99_ms is None:
            parser.error("--find-max needs --p99-ms")
        best, results = max_sustained_rps(args.url, bodies, p99_limit_ms=args.p99_ms,
                                          start_rps=args.start_rps, factor=args.factor,
                                          step_duration_s=args.duration, max_rps=args.max_rps, **common)
        print(_table(results))
        print(f"max sustained rate: {best:.1f} rps (zero errors, p99 <= {args.p99_ms} ms)")
    elif args.rps is not None:
        result = run_rate_sync(args.url, bodies, args.rps, args.duration, max_in_flight=args.max_in_flight,
                               **common)
        print(_table([result]))
    else:
        print(_table([run_closed_sync(args.url, bodies, args.concurrency, args.duration, **common)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
