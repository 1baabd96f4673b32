"""Real-time benchmark: event ingestion, an event's visibility in /score, trigger lateness, and
Redis online-store lookups.

    python benchmarks/bench_realtime.py                  # $CVM_HOME or ./cvm_home (make demo first)
    python benchmarks/bench_realtime.py --quick          # short phases
    python benchmarks/bench_realtime.py --write benchmarks/RESULTS-realtime.md

Works on a scratch copy of the home's serving state (models, published snapshot, profiles), so the
home's own event and decision logs are not touched. Everything runs on this machine (2 cores): the
load generator and the webhook receiver compete with the server.

1. ``POST /events`` in batches of 100, closed loop, 4 connections, ``--ingest-seconds`` per run,
   ``--runs`` runs (median): events acknowledged per second (each batch durable before its
   answer). Target >= 5,000 events/s. Embedded event log (SQLite); then (1r, 2r) the same with
   ``CVM_REDIS_URL``: the event stream and the online store on a real Redis with ``appendonly yes``
   and ``appendfsync always`` (each acknowledged batch on disk, as the SQLite log).
2. An event followed by ``/score`` for the same customer: a purchase on the snapshot's day, then
   /score; the time from the event's acknowledgement to the /score answer that shows it
   (``freshness.events_applied``), ``--visibility`` pairs. Target p99 <= 50 ms.
3. Triggers: ``--carts`` add_to_cart events at about 20/s, each with its own request, under a rule
   "add_to_cart and no purchase within 3 s"; lateness of each fire after its deadline (from the
   trigger store) and of each webhook delivery (arrival at a receiver on loopback). Target p99 <= 1 s.
   With ``redis-events`` as well, again (3r) with the event stream and the trigger state on Redis.
4. The online store on a real ``redis-server`` (Debian's package, loopback, no persistence):
   ``get`` of one customer from ``--redis-rows`` rows x ``--redis-features`` features (seeded random
   ids), against the embedded SQLite store on the same data. Target p99 <= 2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from base.processes import free_port, wait_until
from benchmarks.bench_serving import Server, machine_info, post
from benchmarks.loadgen import run_closed_sync

API_KEY = "bench-realtime-" + "k" * 24
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
CVM = str(Path(sys.executable).parent / "cvm")
SECRET = "bench-realtime-webhook-secret"
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def scratch_home(home: Path, scratch: Path, name: str = "home") -> Path:
    """The home's serving state without its logs (events, decisions, triggers, batch outputs)."""
    out = scratch / name
    shutil.copytree(home, out, ignore=shutil.ignore_patterns("events", "decisions", "triggers", "batch", "tmp",
                                                             "quarantine", "bentoml"), symlinks=True)
    return out


def snapshot_info(home: Path, dataset: str) -> tuple[date, list[str]]:
    pointer = json.loads((home / "online" / dataset / "CURRENT.json").read_text())
    snaps = sorted((home / "features" / dataset).glob(f"as_of={pointer['as_of']}"))
    if not snaps:
        raise SystemExit(f"no feature snapshot under {home / 'features' / dataset}: run make demo first")
    ids = pd.read_parquet(snaps[-1], columns=["customer_id"]).customer_id.astype(str).tolist()
    return date.fromisoformat(pointer["as_of"]), ids


def serve(args, home: Path, scratch: Path, name: str, extra: list[str] | None = None,
          env_extra: dict | None = None) -> Server:
    env = {**os.environ, "CVM_API_KEYS": API_KEY, "CVM_HOME": str(home), "BENTOML_HOME": str(scratch / "bentoml"),
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    for var in ("MLFLOW_TRACKING_URI", "CVM_API_KEYS_FILE", "CVM_ADMIN_KEYS", "CVM_NO_AUTH", "CVM_REDIS_URL"):
        if var not in (env_extra or {}):
            env.pop(var, None)
    port = free_port()
    cmd = [CVM, "serve", "--port", str(port), "--dataset", args.dataset, "--home", str(home),
           "--reload-seconds", "0", *(extra or [])]
    server = Server(f"cvm serve ({name})", cmd, env, f"http://127.0.0.1:{port}/readyz", scratch / f"{name}.log")
    server.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return server


# ---------------------------------------------------------------------------- 1. ingestion
def ingestion(args, base: str, ids: list[str]) -> dict:
    counter = iter(range(10**9))
    kinds = ["view", "view", "view", "add_to_cart", "email_open", "purchase"]
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def body(_: int) -> bytes:
        k = next(counter)
        events = []
        for j in range(100):
            kind = kinds[(k * 7 + j) % len(kinds)]
            e = {"event_id": f"ing-{k}-{j}", "customer_id": ids[(k * 100 + j) % len(ids)], "type": kind,
                 "timestamp": stamp}
            if kind == "purchase":
                e["properties"] = {"order_id": f"o-{k}-{j}", "amount": 12.5, "category": "GROCERY"}
            events.append(e)
        return json.dumps({"events": events}).encode()

    rates, p99s = [], []
    for run in range(args.runs):
        r = run_closed_sync(f"{base}/events", body, 4, args.ingest_seconds, headers=AUTH, warmup_s=2.0)
        rates.append(r.achieved_rps * 100)
        p99s.append(r.summary()["p99"])
        log(f"  run {run + 1}: {rates[-1]:,.0f} events/s, p99 {p99s[-1]:.1f} ms per batch, errors {r.errors}")
        if r.errors:
            raise SystemExit(f"/events answered errors: {r.status_counts}")
    med = statistics.median(rates)
    return {"measurement": "1. POST /events, batches of 100, 4 connections (median of runs)",
            "result": f"{med:,.0f} events/s (runs: {', '.join(f'{x:,.0f}' for x in rates)}; batch p99 "
                      f"{statistics.median(p99s):.1f} ms)", "target": ">= 5,000 events/s", "met": med >= 5000}


# --------------------------------------------------------------------------- 2. visibility
def visibility(args, base: str, ids: list[str], day: date) -> dict:
    rng = random.Random(1)
    applied: dict[str, int] = {}
    lat, retries = [], 0
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    for i in range(args.visibility):
        cid = rng.choice(ids)
        ts = (start + timedelta(seconds=rng.randrange(86_000))).isoformat().replace("+00:00", "Z")
        ev = {"event_id": f"vis-{i}", "customer_id": cid, "type": "purchase", "timestamp": ts,
              "properties": {"order_id": f"vis-o-{i}", "amount": 20.0}}
        status, _ = post(f"{base}/events", json.dumps({"events": [ev]}).encode(), AUTH)
        acked = time.perf_counter()
        if status != 200:
            raise SystemExit(f"/events answered {status}")
        want = applied.get(cid, 0) + 1
        body = json.dumps({"customer_ids": [cid], "reasons": False}).encode()
        while True:
            status, text = post(f"{base}/score", body, AUTH)
            got = json.loads(text)["results"][0]["freshness"]["events_applied"] if status == 200 else -1
            if got >= want:
                break
            retries += 1
        lat.append((time.perf_counter() - acked) * 1e3)
        applied[cid] = got
    p99 = pct(lat, 99)
    return {"measurement": f"2. event acknowledged -> /score shows it ({args.visibility} pairs, 1 connection)",
            "result": f"p50 {pct(lat, 50):.1f} ms, p99 {p99:.1f} ms, max {max(lat):.1f} ms; /score calls that did "
                      f"not show it yet: {retries}", "target": "p99 <= 50 ms", "met": p99 <= 50}


def on_redis(args, home: Path, scratch: Path, ids: list[str], day: date) -> list[dict]:
    """1 and 2 (and 3 with triggers) again with CVM_REDIS_URL: the event stream, the online store and
    the trigger state on a real Redis."""
    from features.online_fresh import publish_fresh
    from features.online_redis import RedisOnlineStore
    from features.snapshot import CONTACTS_DIR, read_metadata
    from tests.db_servers import start_redis

    snap = home / "features" / args.dataset / f"as_of={day.isoformat()}"
    meta = read_metadata(snap.parent, day)

    def publish(url: str) -> None:
        store = RedisOnlineStore(url, args.dataset)
        version = store.publish(snap, as_of=day, contacts=snap / CONTACTS_DIR if (snap / CONTACTS_DIR).exists()
                                else None, metadata={"fingerprint": meta["fingerprint"], "dataset": args.dataset,
                                                     "feature_config": meta["feature_config"]}).version
        store.close()
        publish_fresh(home / "online" / args.dataset, snap, day, version)

    with start_redis(scratch / "redis-events", durable=True) as server:
        publish(server.url)
        with serve(args, home, scratch, "events-redis", env_extra={"CVM_REDIS_URL": server.url}) as s:
            rows = [visibility(args, s.base, ids, day), ingestion(args, s.base, ids)]
    if "triggers" in args.only_set:  # timers and outbox on Redis too; a stream without the carts of 1r
        with start_redis(scratch / "redis-triggers", durable=True) as server:
            publish(server.url)
            rows.append(triggers(args, home, scratch, ids, redis_url=server.url))
    for r in rows:
        r["measurement"] = (r["measurement"].replace("1. ", "1r. ").replace("2. ", "2r. ").replace("3. ", "3r. ")
                            + " - on Redis")
    return rows


# ----------------------------------------------------------------------------- 3. triggers
class Receiver:
    def __init__(self):
        self.arrivals: dict[str, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.arrivals.setdefault(json.loads(body)["trigger_id"], time.time())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def triggers(args, home: Path, scratch: Path, ids: list[str], redis_url: str | None = None) -> dict:
    from base.home import Home
    from scoring.triggers.open import open_trigger_store

    receiver = Receiver()
    env = {"CVM_WEBHOOK_SECRET": SECRET, **({"CVM_REDIS_URL": redis_url} if redis_url else {})}
    rules = scratch / "triggers.yaml"
    rules.write_text(yaml.safe_dump({
        "webhook": {"url": receiver.url, "backoff_seconds": 0.2, "max_backoff_seconds": 1},
        "triggers": [{"name": "abandoned_cart", "when": {"event": "add_to_cart"},
                      "unless": {"event": "purchase", "within_minutes": 0.05}}]}))
    with serve(args, home, scratch, "triggers-redis" if redis_url else "triggers", ["--triggers", str(rules)],
               env) as s:
        rng = random.Random(2)
        for i in range(args.carts):
            ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            ev = {"event_id": f"bench-cart-{i}", "customer_id": rng.choice(ids), "type": "add_to_cart", "timestamp": ts}
            status, _ = post(f"{s.base}/events", json.dumps({"events": [ev]}).encode(), AUTH)
            if status != 200:
                raise SystemExit(f"/events answered {status}")
            time.sleep(0.05)
        store = open_trigger_store(Home(home), args.dataset, redis_url=redis_url)
        ours = lambda: [t for t in store.timers() if (t["cause_event_id"] or "").startswith("bench-cart-")]

        wait_until(lambda: sum(t["state"] != "pending" for t in ours()) >= args.carts, timeout=120, interval=0.5,
                   what="every trigger fired")
        timers = ours()
        fired = [(t["trigger_id"], t["due_us"], t["done_us"]) for t in timers if t["state"] == "fired"]
        mine = {t["trigger_id"] for t in timers}
        sent = {o["trigger_id"]: o["status"] for o in store.outbox() if o["trigger_id"] in mine}
        states = {st: sum(t["state"] == st for t in timers) for st in {t["state"] for t in timers}}
        why = next((t["reason"] for t in timers if t["state"] != "fired"), None)
        store.close()
        if states.get("fired", 0) < args.carts:
            log(f"  timers not fired: {states}; e.g. {why}")
        to_send = [t for t, st in sent.items() if st == "pending" or st == "delivered"]
        wait_until(lambda: all(t in receiver.arrivals for t in to_send), timeout=60, interval=0.2,
                   what="every delivery")
    fire_late = [(done_us - due) / 1e3 for _, due, done_us in fired]
    due_of = {t: due for t, due, _ in fired}
    deliver_late = [receiver.arrivals[t] * 1e3 - due_of[t] / 1e3 for t in to_send]
    p99 = max(pct(fire_late, 99), pct(deliver_late, 99))
    return {"measurement": f"3. triggers: {args.carts} carts, fire and delivery after the deadline",
            "result": f"fired {len(fired)}: p50 {pct(fire_late, 50):.0f} ms, p99 {pct(fire_late, 99):.0f} ms; "
                      f"delivered {len(deliver_late)} (the others: no offer, not sent): p50 "
                      f"{pct(deliver_late, 50):.0f} ms, p99 {pct(deliver_late, 99):.0f} ms",
            "target": "p99 <= 1 s", "met": p99 <= 1000}


# -------------------------------------------------------------------------------- 4. redis
def redis_lookups(args, scratch: Path) -> dict:
    from benchmarks.bench_online_store import write_snapshot
    from features.online_redis import RedisOnlineStore
    from features.online_store import SQLiteOnlineStore
    from tests.db_servers import start_redis

    snap = scratch / "redis-snap"
    write_snapshot(snap, args.redis_rows, args.redis_features, 4, seed=0)
    ids = pd.read_parquet(snap, columns=["customer_id"]).customer_id.tolist()
    from benchmarks.bench_online_store import AS_OF as as_of
    rng = random.Random(3)
    sample = [rng.choice(ids) for _ in range(args.lookups)]
    with start_redis(scratch / "redis") as server:
        store = RedisOnlineStore(server.url, "bench")
        t = time.perf_counter()
        store.publish(snap, as_of=as_of)
        publish_s = time.perf_counter() - t
        sqlite = SQLiteOnlineStore(scratch / "online-sqlite")
        sqlite.publish(snap, as_of=as_of)
        sqlite.warm_up()
        out = {}
        for name, s in (("redis", store), ("sqlite", sqlite)):
            for cid in sample[:500]:
                s.get(cid)
            lat = []
            for cid in sample:
                t = time.perf_counter()
                s.get(cid)
                lat.append((time.perf_counter() - t) * 1e3)
            out[name] = lat
        store.close()
    r, q = out["redis"], out["sqlite"]
    return {"measurement": f"4. online store get(), one customer, {args.redis_rows:,} rows x {args.redis_features} "
                           f"features ({args.lookups:,} lookups)",
            "result": f"Redis p50 {pct(r, 50):.3f} ms, p99 {pct(r, 99):.3f} ms (publish {publish_s:.0f} s); "
                      f"SQLite p50 {pct(q, 50):.3f} ms, p99 {pct(q, 99):.3f} ms",
            "target": "Redis p99 <= 2 ms", "met": pct(r, 99) <= 2.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("CVM_HOME", "cvm_home")).resolve())
    p.add_argument("--dataset", default="completejourney")
    p.add_argument("--ingest-seconds", type=float, default=20.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--visibility", type=int, default=1000)
    p.add_argument("--carts", type=int, default=300)
    p.add_argument("--redis-rows", type=int, default=1_000_000)
    p.add_argument("--redis-features", type=int, default=100)
    p.add_argument("--lookups", type=int, default=20_000)
    p.add_argument("--only", choices=["ingest", "visibility", "redis-events", "triggers", "redis"], action="append")
    p.add_argument("--quick", action="store_true", help="short phases, 100 k Redis rows")
    p.add_argument("--write", type=Path)
    args = p.parse_args()
    if args.quick:
        args.ingest_seconds, args.runs, args.visibility, args.carts = 5.0, 1, 200, 60
        args.redis_rows, args.lookups = 100_000, 5000
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()[0]
    only = args.only_set = set(args.only or ["ingest", "visibility", "redis-events", "triggers", "redis"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="cvm-bench-realtime-") as tmp:
        scratch = Path(tmp)
        home = scratch_home(args.home, scratch)
        day, ids = snapshot_info(home, args.dataset)
        if only & {"ingest", "visibility"}:
            with serve(args, home, scratch, "events") as s:
                if "visibility" in only:  # first, on a small day state
                    log(f"visibility: {args.visibility} event -> /score pairs")
                    rows.append(visibility(args, s.base, ids, day))
                if "ingest" in only:
                    log(f"ingestion: {args.runs} x {args.ingest_seconds:.0f} s")
                    rows.append(ingestion(args, s.base, ids))
        if "redis-events" in only:
            log("events on Redis")
            rows += on_redis(args, scratch_home(args.home, scratch, "home-redis"), scratch, ids, day)
        if "triggers" in only:
            log(f"triggers: {args.carts} carts")
            # a home of its own: an event log without the ingestion runs' carts
            rows.append(triggers(args, scratch_home(args.home, scratch, "home-triggers"), scratch, ids))
        if "redis" in only:
            log(f"redis: {args.redis_rows:,} rows")
            rows.append(redis_lookups(args, scratch))
    head = "| measurement | result | target | met |\n| --- | --- | --- | --- |"
    text = "\n".join([head, *(f"| {r['measurement']} | {r['result']} | {r['target']} | "
                              f"{'yes' if r['met'] else 'NO'} |" for r in rows)])
    print(text)
    if args.write:
        cmd = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        args.write.write_text("\n".join(["# Real time: ingestion, freshness, triggers, Redis lookups", "",
                                         f"`python {cmd}`", "",
                                         *[f"- {m}" for m in machine_info(started, load_before)], "", text, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
