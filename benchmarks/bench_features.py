"""Feature build benchmark: time and peak memory by number of customers, against pandas.

    python benchmarks/bench_features.py                       # 100k, 1M, 3M; 3 runs each
    python benchmarks/bench_features.py --sizes 100000 --repeats 1

For each size it generates the synthetic dataset once (``cvm synth``, seed 0, cached in
--data-dir), then, in fresh processes, times:

* ``build``        ``cvm features build`` end to end on DuckDB: validation and quarantine,
                   identity resolution, every feature group, Parquet snapshot;
* ``core duckdb``  the core contract (recency, tenure, frequency, monetary, scores,
                   segment) from the raw transaction files with the Ibis builder on DuckDB;
* ``core pandas``  the same core features with a straightforward pandas groupby
                   (``features/pandas_reference.py``) on the same files;
* ``build spark``  (``--spark-sizes``) the full build on Spark ``local[2]``.

Medians of --repeats runs; peak RSS is the largest resident set of the process tree
(sampled every 50 ms; the JVM included for Spark). Prints one table; ``--write FILE``
also writes it as Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CVM = str(Path(PY).with_name("cvm"))


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one command.

    RSS is sampled every 50 ms over the whole process tree (Spark's JVM is a child of the
    Python driver)."""
    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t
    _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.decode()[-5000:]}")
    return wall, peak / 1e9


def ensure_dataset(data_dir: Path, n: int) -> tuple[Path, float | None]:
    out = data_dir / f"synth-{n}"
    if (out / "_synth.json").exists():
        return out, None
    t = time.perf_counter()
    subprocess.run([CVM, "synth", "--customers", str(n), "--out", str(out), "--seed", "0"], check=True,
                   stdout=subprocess.DEVNULL)
    return out, time.perf_counter() - t


def worker(mode: str, dataset: str, as_of: str, out: str) -> None:
    """Run inside a measured process: the core features only, by DuckDB or by pandas."""
    from pathlib import Path

    day = date.fromisoformat(as_of)
    files = sorted(str(p) for p in (Path(dataset) / "transactions").glob("*.parquet"))
    if mode == "core-pandas":
        import numpy as np
        import pandas as pd

        from features.pandas_reference import core_features

        tx = pd.concat([pd.read_parquet(f, columns=["customer_id", "order_id", "timestamp", "amount"])
                        for f in files], ignore_index=True)
        tx = tx[tx["customer_id"].notna() & np.isfinite(tx["amount"])]  # what validation would keep
        core_features(tx, day).to_parquet(out, index=False)
    elif mode == "core-duckdb":
        from base.engines import open_engine
        from features.build import core_features
        from features.config import FeatureConfig
        from features.definitions import DatasetShape, declare

        with open_engine("duckdb") as engine:
            tx = engine.read([Path(f) for f in files], "parquet")
            tx = tx.filter(tx.customer_id.notnull() & ((tx.amount - tx.amount) == 0))  # finite amounts
            engine.con.to_parquet(core_features(tx, day, declare(FeatureConfig(), DatasetShape())), out)
    else:
        raise SystemExit(f"unknown worker mode {mode}")


def check_core_agree(a: str, b: str) -> bool:
    import pandas as pd

    x = pd.read_parquet(a).drop(columns=["as_of"], errors="ignore").sort_values("customer_id").reset_index(drop=True)
    y = pd.read_parquet(b).drop(columns=["as_of"], errors="ignore").sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(x, y, check_dtype=False, rtol=1e-9)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,3000000", help="customers per synthetic dataset")
    ap.add_argument("--pandas-sizes", default="100000,1000000", help="sizes for the core-features comparison")
    ap.add_argument("--spark-sizes", default="100000,1000000", help="sizes also built on Spark local[2]")
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    ap.add_argument("--as-of", default="2025-07-01")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CVM_BENCH_DATA", "/tmp/cvm-bench")))
    ap.add_argument("--write", type=Path, help="also write the table as Markdown to this file")
    ap.add_argument("--worker", nargs=4, metavar=("MODE", "DATASET", "AS_OF", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    pandas_sizes = {int(s) for s in args.pandas_sizes.split(",") if s}
    spark_sizes = {int(s) for s in args.spark_sizes.split(",") if s}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=args.data_dir) as scratch:
        env = {**os.environ, "CVM_HOME": str(Path(scratch) / "home")}
        for n in sizes:
            dataset, gen = ensure_dataset(args.data_dir, n)
            tx_rows = sum(__import__("pyarrow.parquet").parquet.ParquetFile(p).metadata.num_rows
                          for p in (dataset / "transactions").glob("*.parquet"))
            print(f"{n:,} customers: {tx_rows:,} transaction lines" + (f" (generated in {gen:.0f} s)" if gen else ""),
                  flush=True)
            runs: dict[str, list[tuple[float, float]]] = {}
            plan = [("build duckdb", [CVM, "features", "build", "--dataset", str(dataset), "--as-of", args.as_of,
                                      "--out", str(Path(scratch) / "f"), "--replace-schema"])]
            if n in pandas_sizes:
                for mode in ("core-duckdb", "core-pandas"):
                    plan.append((mode.replace("-", " "), [PY, __file__, "--worker", mode, str(dataset), args.as_of,
                                                          str(Path(scratch) / f"{mode}.parquet")]))
            if n in spark_sizes:
                plan.append(("build spark", [CVM, "features", "build", "--dataset", str(dataset), "--as-of",
                                             args.as_of, "--engine", "spark", "--spark-master", "local[2]",
                                             "--out", str(Path(scratch) / "s"), "--replace-schema"]))
            for rep in range(args.repeats):
                for label, cmd in plan:
                    wall, rss = measure(cmd, env)
                    runs.setdefault(label, []).append((wall, rss))
                    print(f"  {label:12s} run {rep + 1}: {wall:7.1f} s  peak RSS {rss:5.2f} GB", flush=True)
            agree = None
            if n in pandas_sizes:
                agree = check_core_agree(str(Path(scratch) / "core-duckdb.parquet"),
                                         str(Path(scratch) / "core-pandas.parquet"))
            for label, values in runs.items():
                rows.append({"customers": n, "lines": tx_rows, "what": label,
                             "median_s": statistics.median(w for w, _ in values),
                             "runs_s": [round(w, 1) for w, _ in values],
                             "peak_rss_gb": max(r for _, r in values), "core_agree": agree})

    table = render(rows, args)
    print()
    print(table)
    if args.write:
        args.write.write_text(table + "\n")
        print(f"\nwritten to {args.write}")


def render(rows: list[dict], args) -> str:
    by = {(r["customers"], r["what"]): r for r in rows}
    lines = [
        (f"Feature build benchmark ({platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; as_of {args.as_of}; median of {args.repeats} runs)"),
        "",
        "| customers | transaction lines | what | median wall (s) | runs (s) | peak RSS (GB) |",
        "| ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['customers']:,} | {r['lines']:,} | {r['what']} | {r['median_s']:.1f} | "
                     f"{', '.join(map(str, r['runs_s']))} | {r['peak_rss_gb']:.2f} |")
    lines.append("")
    for n in sorted({r["customers"] for r in rows}):
        core_d, core_p = by.get((n, "core duckdb")), by.get((n, "core pandas"))
        build, spark = by.get((n, "build duckdb")), by.get((n, "build spark"))
        if core_d and core_p:
            lines.append(f"- {n:,}: core features, pandas / DuckDB = {core_p['median_s'] / core_d['median_s']:.1f}x "
                         f"(outputs equal: {core_d['core_agree']}); full DuckDB build vs pandas core only = "
                         f"{core_p['median_s'] / build['median_s']:.1f}x")
        if spark and build:
            lines.append(f"- {n:,}: Spark local[2] / DuckDB full build = {spark['median_s'] / build['median_s']:.1f}x")
    builds = sorted((n, r) for (n, w), r in by.items() if w == "build duckdb")
    for (n0, r0), (n1, r1) in itertools.pairwise(builds):
        lines.append(f"- growth {n0:,} -> {n1:,} customers ({n1 / n0:.0f}x): build time x"
                     f"{r1['median_s'] / r0['median_s']:.1f}, peak RSS x{r1['peak_rss_gb'] / r0['peak_rss_gb']:.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
