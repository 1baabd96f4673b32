"""Uplift training cost at scale: ``training.uplift.pipeline.train_uplift`` (what ``cvm train
uplift`` runs after reading the log) on a randomised log of ``--rows`` decisions.

The features are real synthetic-customer features: rows of a published snapshot (``--snapshot``,
a directory of Parquet; default: a ``cvm synth`` dataset of 5,000 persons built here), drawn with
replacement and given new customer ids, so the learners see the snapshot's columns and
distributions at the size asked for. Assignment is random (70 % treated across 8 offers, 30 %
control) over 20 days; the label is drawn from a known heterogeneous effect (``_label``), so the
candidates have something to find. The whole pipeline runs with the default configuration
(experiments/uplift.yaml: T, X and DR learners, pooled and per offer, 200 trees, 5 bags for the
chosen refit), logged to a throwaway MLflow store; the table gives the wall time of each stage.
Usage: python benchmarks/bench_uplift_training.py [--rows 1000000] [--snapshot DIR]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
AS_OF = date(2025, 8, 15)


def _snapshot(work: Path) -> Path:
    data, home = work / "synth", work / "home"
    subprocess.run([sys.executable, "-m", "cvm.cli", "synth", "-n", "5000", "-o", str(data), "--seed", "5"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "cvm.cli", "features", "build", "--dataset", str(data), "--as-of",
                    "2025-07-01", "--publish", "--home", str(home)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return next((home / "features").glob("*/as_of=2025-07-01"))


def _label(frame: pd.DataFrame, treated: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """P(convert) = 0.05 + 0.25 x recency rank (recent buyers buy anyway) + treatment x (0.15 x
    the rank of frequency - 0.05): frequent buyers are persuadable, rare ones put off a little."""
    rec = frame["recency_days"].rank(pct=True, ascending=False).to_numpy() if "recency_days" in frame else 0.5
    freq = frame["frequency"].rank(pct=True).to_numpy() if "frequency" in frame else 0.5
    p = 0.05 + 0.25 * rec + treated * (0.15 * freq - 0.05)
    return (rng.random(len(frame)) < np.clip(p, 0, 1)).astype("int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--offers", type=int, default=8)
    ap.add_argument("--snapshot", type=Path, default=None)
    args = ap.parse_args()
    from base.home import Home
    from features.snapshot import read_schema
    from training.uplift.config import UpliftConfig
    from training.uplift.data import ASSIGNMENT_COLUMNS
    from training.uplift.pipeline import train_uplift

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        snap = args.snapshot or _snapshot(work)
        columns = [c["name"] for c in read_schema(snap.parent)["columns"] if c["group"] != "key"]
        base = pd.read_parquet(snap)
        rng = np.random.default_rng(0)
        rows = base.iloc[rng.integers(0, len(base), args.rows)].reset_index(drop=True)
        ids = np.char.add("b", np.arange(args.rows).astype(str)).astype(object)
        features = rows[columns].assign(customer_id=ids)
        treated = (rng.random(args.rows) < 0.7).astype("int8")
        days = rng.integers(0, 20, args.rows)
        assignments = pd.DataFrame({
            "customer_id": ids, "offer_id": np.array([f"xs-{k}" for k in range(args.offers)])[
                rng.integers(0, args.offers, args.rows)].astype(object),
            "treatment": treated, "assigned_at": pd.Timestamp("2025-07-01") + pd.to_timedelta(days, unit="D"),
            "assignment_p": np.nan, "label": _label(rows, treated, rng), "value": 0.0})[list(ASSIGNMENT_COLUMNS)]
        assignments = assignments.sort_values("assigned_at", kind="stable").reset_index(drop=True)
        home = Home(work / "bench-home")
        stages: list[tuple[str, float]] = []
        last = [time.perf_counter()]

        def step(message: str) -> None:
            now = time.perf_counter()
            stages.append((message, now - last[0]))
            last[0] = now

        t0 = time.perf_counter()
        result = train_uplift(assignments, features, columns, as_of=AS_OF, cfg=UpliftConfig(), home=home,
                              dataset="bench", source="generated log", register=False, step=step)
        total = time.perf_counter() - t0
        step("end")
    print(f"| rows | features | offers | chosen | total (s) |\n|---|---|---|---|---|\n"
          f"| {args.rows:,} | {len(columns)} | {args.offers} | {result.chosen} | {total:.0f} |\n")
    print("| stage (started by) | seconds |\n|---|---|")
    for (msg, _), (_, seconds) in itertools.pairwise(stages):  # a stage lasts until the next starts
        print(f"| {msg} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
