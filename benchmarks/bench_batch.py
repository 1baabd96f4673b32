"""Nightly batch benchmark: `cvm score-batch` end to end by number of customers and engine.

    python benchmarks/bench_batch.py                                   # 100k, 1M, 3M; 3 runs each
    python benchmarks/bench_batch.py --sizes 100000 --repeats 1 --spark-sizes 100000

Setup (cached in --work): four champions trained on a 20,000-customer synthetic dataset
(`cvm train all`, a small tuning budget but full-size boosters) into one home's registry,
and the offer catalog ``scoring/catalogs/synthetic.yaml``. Datasets are ``cvm synth``
(seed 0), cached in --data-dir and shared with bench_features.py.

Measured, each in a fresh process (wall time and peak RSS of the whole process tree, the
JVM included for Spark):

* ``end to end``   the feature snapshot removed first: features, the four models, the
                   next-best-offer engine, reconciliation, the four outputs and the manifest;
* ``scoring only`` the snapshot reused: everything but the feature build;
* both on DuckDB (embedded, the default) and, for --spark-sizes, on Spark ``local[2]``.

Then, in this process, model inference on one 200,000-row chunk of the largest snapshot:
the job's inference (``scoring.inference.score_block``: building each model's float32
matrix from the snapshot columns, BG/NBD, calibration, cross-sell for every category)
against raw ``Booster.predict`` on the same, prebuilt matrices.

Medians of --repeats runs. Prints one table; ``--write FILE`` also writes it as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from base.dates import partition_dir
from benchmarks.bench_features import CVM, ensure_dataset, measure
from training.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "experiments" / "synthetic.yaml"
CATALOG = ROOT / "scoring" / "catalogs" / "synthetic.yaml"
TRAIN_CUSTOMERS = 20_000
TRAIN_BUDGET = """
train:
  origins: {step_days: 28, min_history_days: 90, max_train_origins: 3}
  budget: {trials: 4, timeout_seconds: 120}
  seed: 11
"""


def ensure_home(work: Path, data_dir: Path, as_of: str) -> Path:
    """A home whose registry has a champion for every task (trained once, then reused)."""
    home = work / "home"
    if (home / ".bench-trained").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    data, _ = ensure_dataset(data_dir, TRAIN_CUSTOMERS)
    exp = work / "experiments"
    exp.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG, exp / "synthetic.yaml")
    for task in TASKS:
        (exp / f"{task}.yaml").write_text("extends: synthetic.yaml\n" + TRAIN_BUDGET)
    print(f"training the champions on {data.name} (once) ...", file=sys.stderr)
    subprocess.run([CVM, "train", "all", "--dataset", str(data), "--as-of", as_of, "--experiments", str(exp),
                    "--home", str(home)], check=True, stdout=subprocess.DEVNULL)
    (home / ".bench-trained").touch()
    return home


def run_batch(home: Path, dataset: Path, as_of: str, out: Path, engine: str, rebuild: bool) -> dict:
    """One measured `cvm score-batch`; returns wall, peak RSS and the manifest's figures."""
    snap = partition_dir(home / "features" / dataset.name, date.fromisoformat(as_of))
    if rebuild:
        shutil.rmtree(snap, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [CVM, "score-batch", "--dataset", str(dataset), "--as-of", as_of, "--home", str(home),
           "--config", str(CONFIG), "--catalog", str(CATALOG), "--out", str(out), "--no-publish", "--engine", engine]
    if engine == "spark":
        cmd += ["--spark-master", "local[2]"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "MLFLOW_DISABLE_TELEMETRY": "true"}
    wall, rss = measure(cmd, env=env)
    manifest = json.loads((partition_dir(out, date.fromisoformat(as_of)) / "manifest.json").read_text())
    return {"wall": wall, "rss": rss, "features": manifest["timings"].get("features_seconds", 0.0),
            "score": manifest["timings"]["score_seconds"], "rows": manifest["rows"]}


def inference_vs_raw(home: Path, dataset: Path, as_of: str, rows: int, repeats: int) -> dict:
    """The job's inference against raw Booster.predict on the same matrices, one chunk."""
    import pyarrow.parquet as pq

    from scoring.champions import RegistrySource
    from scoring.inference import score_block
    from training.predictor import block_from_frame

    src = RegistrySource(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    champions = {t: src.load(t, v) for t, v in src.versions().items()}
    snap = partition_dir(home / "features" / dataset.name, date.fromisoformat(as_of))
    table = pq.ParquetFile(min(snap.glob("*.parquet"))).read().slice(0, rows)
    frame = table.to_pandas()
    n = len(frame)
    block = block_from_frame(frame)

    # the exact matrices each booster receives, captured during one scoring pass
    raw_calls = []
    boosters = [b for ch in champions.values() for b in (ch.model.model.booster,
                                                          getattr(ch.model.model, "count_booster", None)) if b]
    for booster in boosters:
        def capture(x, *a, _real=booster.predict, **kw):
            raw_calls.append((_real, x.copy()))
            return _real(x, *a, **kw)
        booster.predict = capture
    score_block(champions, block, n)
    for booster in boosters:
        del booster.predict  # back to the class method

    def ours() -> float:
        t = time.perf_counter()
        score_block(champions, block, n)
        return time.perf_counter() - t

    def raw() -> float:
        t = time.perf_counter()
        for predict, x in raw_calls:
            predict(x)
        return time.perf_counter() - t

    ours(), raw()  # warm up
    t_ours, t_raw = [], []
    for _ in range(repeats):  # interleaved: both see the same machine state
        t_ours.append(ours())
        t_raw.append(raw())
    trees = {t: ch.model.model.booster.num_trees() for t, ch in champions.items()}
    return {"rows": n, "ours": statistics.median(t_ours), "raw": statistics.median(t_raw),
            "ours_runs": t_ours, "raw_runs": t_raw, "trees": trees,
            "matrix_rows": sum(len(x) for _, x in raw_calls)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,3000000", help="customers per synthetic dataset")
    ap.add_argument("--spark-sizes", default="100000", help="sizes also run on Spark local[2]")
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    ap.add_argument("--once-sizes", default="3000000", help="sizes measured with a single run (the longest)")
    ap.add_argument("--as-of", default="2025-07-01")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CVM_BENCH_DATA", "/tmp/cvm-bench")))
    ap.add_argument("--work", type=Path, default=None, help="home and outputs (default <data-dir>/batch)")
    ap.add_argument("--inference-rows", type=int, default=200_000)
    ap.add_argument("--write", type=Path, help="also write the table as Markdown to this file")
    args = ap.parse_args()
    date.fromisoformat(args.as_of)
    work = args.work or args.data_dir / "batch"
    sizes = [int(s) for s in args.sizes.split(",") if s]
    spark_sizes = {int(s) for s in args.spark_sizes.split(",") if s}
    once = {int(s) for s in args.once_sizes.split(",") if s}
    home = ensure_home(work, args.data_dir, args.as_of)

    rows = []
    for n in sizes:
        data, _ = ensure_dataset(args.data_dir, n)
        for engine in ("duckdb", "spark") if n in spark_sizes else ("duckdb",):
            for what, rebuild in (("end to end", True), ("scoring only", False)):
                runs = []
                for r in range(1 if n in once else args.repeats):
                    res = run_batch(home, data, args.as_of, work / f"out-{engine}", engine, rebuild)
                    runs.append(res)
                    print(f"{n:>9,} {engine:6} {what:12} run {r + 1}: {res['wall']:.1f} s, "
                          f"{res['rss']:.2f} GB", file=sys.stderr)
                rows.append({"customers": n, "engine": engine, "what": what, "runs": runs})
    largest = max(sizes)
    inf = inference_vs_raw(home, args.data_dir / f"synth-{largest}", args.as_of, args.inference_rows,
                           max(args.repeats, 5))
    text = render(rows, inf, args)
    print(text)
    if args.write:
        args.write.write_text(text)


def render(rows: list[dict], inf: dict, args) -> str:
    med = statistics.median
    out = [(f"Batch scoring benchmark (`cvm score-batch`; {platform.machine()}, {os.cpu_count()} cores, Python "
           f"{platform.python_version()}; as_of {args.as_of}; median of {args.repeats} runs, one run for "
           f"{args.once_sizes or 'none'})"), "",
           ("| customers | engine | run | median wall (s) | runs (s) | features (s) | scoring (s) | rest (s) "
           "| peak RSS (GB) | cross-sell pairs | offers |"),
           "| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        runs = r["runs"]
        walls = [x["wall"] for x in runs]
        out.append(f"| {r['customers']:,} | {r['engine']} | {r['what']} | {med(walls):.1f} | "
                   f"{', '.join(f'{w:.1f}' for w in walls)} | {med(x['features'] for x in runs):.1f} | "
                   f"{med(x['score'] for x in runs):.1f} | "
                   f"{med(x['wall'] - x['features'] - x['score'] for x in runs):.1f} | {max(x['rss'] for x in runs):.2f} | "
                   f"{runs[0]['rows']['cross_sell_pairs']:,} | {runs[0]['rows']['offers']:,} |")
    out += ["", ("features: the snapshot build; scoring: the four models and the offer engine over every chunk "
            "(Spark: until reconciliation is counted); rest: process start, loading the champions and the "
            "contact history, reconciliation, segment migration, writing and checksumming the outputs."), ""]
    e2e = {(r["customers"], r["engine"]): med(x["wall"] for x in r["runs"]) for r in rows if r["what"] == "end to end"}
    sc = {(r["customers"], r["engine"]): med(x["wall"] for x in r["runs"]) for r in rows
          if r["what"] == "scoring only"}
    duck = sorted(n for n, e in e2e if e == "duckdb")
    for a, b in itertools.pairwise(duck):
        out.append(f"- growth {a:,} -> {b:,} customers ({b / a:.0f}x): end to end x{e2e[(b, 'duckdb')] / e2e[(a, 'duckdb')]:.1f}, "
                   f"scoring only x{sc[(b, 'duckdb')] / sc[(a, 'duckdb')]:.1f}")
    for n, e in sorted(e2e):
        if e == "spark":
            out.append(f"- {n:,}: Spark local[2] / DuckDB: end to end {e2e[(n, 'spark')] / e2e[(n, 'duckdb')]:.1f}x, "
                       f"scoring only {sc[(n, 'spark')] / sc[(n, 'duckdb')]:.1f}x")
    if 1_000_000 in duck:
        r = next(r for r in rows if r["customers"] == 1_000_000 and r["engine"] == "duckdb"
                 and r["what"] == "end to end")
        wall, rss = med(x["wall"] for x in r["runs"]), max(x["rss"] for x in r["runs"])
        out.append(f"- 1,000,000 end to end on DuckDB: {wall:.1f} s (target <= 180 s: "
                   f"{'met' if wall <= 180 else 'NOT met'}), peak RSS {rss:.2f} GB (target <= 8 GB: "
                   f"{'met' if rss <= 8 else 'NOT met'})")
    ratio = inf["ours"] / inf["raw"]
    out += ["", (f"Model inference on {inf['rows']:,} snapshot rows ({inf['matrix_rows']:,} matrix rows over "
            f"{len(inf['trees'])} models; trees {inf['trees']}): the job's inference {inf['ours']:.2f} s vs raw "
            f"Booster.predict on the same prebuilt matrices {inf['raw']:.2f} s = {ratio:.2f}x "
            f"(target <= 1.30x: {'met' if ratio <= 1.3 else 'NOT met'}); runs ours "
            f"{', '.join(f'{t:.2f}' for t in inf['ours_runs'])}, raw {', '.join(f'{t:.2f}' for t in inf['raw_runs'])}")]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
