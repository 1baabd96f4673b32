"""Training benchmark: ``cvm train all`` on Complete Journey, time per task and test metrics.

    python benchmarks/bench_training.py                  # as_of 2017-11-01, 30 trials, 3 runs
    python benchmarks/bench_training.py --repeats 1 --trials 10

Each run is a fresh ``cvm train all`` process with its own empty CVM_HOME (the Complete
Journey tables are materialised once, outside the timing, and copied in). Per-task times
come from the runs' MLflow metrics (``seconds_data``: sources, snapshots and labels at every
origin; ``seconds_tune``: the Optuna search; ``seconds_total``: everything including
calibration, evaluation, plots and registration). Prints medians of --repeats runs and the
test metrics of the last run (identical across runs: training is seeded).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
CVM = str(Path(PY).with_name("cvm"))
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from training.tasks import TASK_SPECS, TASKS  # once the repo is on sys.path

PRIMARY = {t: s.primary for t, s in TASK_SPECS.items()}


def run_metrics(home: Path) -> dict[str, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    out = {}
    for task in TASKS:
        exp = client.get_experiment_by_name(TASK_SPECS[task].experiment)
        runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
        out[task] = runs[0].data.metrics
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--as-of", default="2017-11-01")
    ap.add_argument("--trials", type=int, default=30, help="Optuna trials per task")
    ap.add_argument("--repeats", type=int, default=3, help="runs (median reported)")
    ap.add_argument("--write", type=Path, help="also write the table as Markdown to this file")
    args = ap.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

    work = Path(tempfile.mkdtemp(prefix="cvm-bench-train-"))
    seed_home = work / "seed"
    subprocess.run([CVM, "sources", "check", "--dataset", "completejourney", "--home", str(seed_home)],
                   check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    walls, per_task = [], {t: {"seconds_data": [], "seconds_tune": [], "seconds_total": []} for t in TASKS}
    metrics = {}
    try:
        for i in range(args.repeats):
            home = work / f"run{i}"
            shutil.copytree(seed_home / "datasets", home / "datasets")
            env = {**os.environ, "CVM_HOME": str(home)}
            env.pop("MLFLOW_TRACKING_URI", None)
            t = time.perf_counter()
            r = subprocess.run([CVM, "train", "all", "--as-of", args.as_of, "--trials", str(args.trials)],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
            wall = time.perf_counter() - t
            if r.returncode:
                sys.exit(f"cvm train all failed:\n{r.stderr[-4000:]}")
            walls.append(wall)
            metrics = run_metrics(home)
            for task in TASKS:
                for k in per_task[task]:
                    per_task[task][k].append(metrics[task][k])
            print(f"run {i + 1}: {wall:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    lines = [(f"Training benchmark (cvm train all, Complete Journey, as_of {args.as_of}, {args.trials} trials per "
             f"task; {platform.machine()}, {os.cpu_count()} cores; median of {args.repeats} runs)"), "",
             "| task | data (s) | tune (s) | total (s) | runs total (s) | judged metric | value |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: |"]
    for task in TASKS:
        p = per_task[task]
        lines.append(f"| {task} | {med(p['seconds_data']):.1f} | {med(p['seconds_tune']):.1f} | "
                     f"{med(p['seconds_total']):.1f} | {', '.join(f'{v:.1f}' for v in p['seconds_total'])} | "
                     f"{PRIMARY[task]} | {metrics[task][PRIMARY[task]]:.4f} |")
    lines.append(f"| **all (process wall)** | | | **{med(walls):.1f}** | {', '.join(f'{v:.1f}' for v in walls)} | | |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        args.write.write_text(table + "\n")
        print(f"\nwritten to {args.write}")


if __name__ == "__main__":
    main()
