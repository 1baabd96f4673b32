"""Uplift scoring cost (scoring.uplift_scores): one customer x the offers (what /recommend adds
before arbitration) and a block of customers x the offers (what the batch adds per chunk).

Each learner is fit pooled with the training defaults (experiments/uplift.yaml: 200 trees of
15 leaves, 5 bootstrap bags) on a generated randomised log, then timed in process.
Usage: python benchmarks/bench_uplift_scoring.py [--rows-batch N] [--offers K]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from scoring.uplift_scores import UpliftScorer
from training.encode import FeatureEncoder
from training.predictor import block_from_frame
from training.uplift.config import UpliftConfig
from training.uplift.learners import DRLearner, TLearner, XLearner
from training.uplift.model import OFFER_COLUMN, UpliftModel


def _frame(n: int, features: int, offers: list[str], rng: np.random.Generator) -> pd.DataFrame:
    data = {f"f{j}": rng.normal(size=n) for j in range(features)}
    data[OFFER_COLUMN] = rng.choice(offers, size=n)
    return pd.DataFrame(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--rows-batch", type=int, default=100_000)
    ap.add_argument("--offers", type=int, default=6)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    offers = [f"o{k}" for k in range(args.offers)]
    cfg = UpliftConfig()
    train = _frame(args.train_rows, args.features, offers, rng)
    t = (rng.random(len(train)) < 0.5).astype(int)
    y = (rng.random(len(train)) < 0.1 + 0.05 * t * (train["f0"] > 0)).astype(int)
    feats = [f"f{j}" for j in range(args.features)]
    enc = FeatureEncoder(feats).fit(train)
    customers = _frame(args.rows_batch, args.features, offers, rng).drop(columns=[OFFER_COLUMN])
    one = block_from_frame(customers.head(1))
    many = block_from_frame(customers)
    print(f"| learner | fit (s) | 1 customer x {args.offers} offers: p50 / p99 (ms) | "
          f"{args.rows_batch:,} customers x {args.offers} offers (s) |")
    print("|---|---|---|---|")
    for name, cls in (("t", TLearner), ("x", XLearner), ("dr", DRLearner)):
        model = UpliftModel(name, "pooled", feats, enc, offers)
        t0 = time.perf_counter()
        model.models["*"] = cls(outcome="binary", params=cfg.lightgbm(), n_bags=cfg.n_bags,
                                random_state=cfg.seed).fit(model.design(train), t, y,
                                                           propensity=np.full(len(t), 0.5))
        fit = time.perf_counter() - t0
        scorer = UpliftScorer(model)
        times = []
        for _ in range(args.calls):
            s = time.perf_counter()
            scorer.score(one, 1)
            times.append(time.perf_counter() - s)
        ms = np.array(times) * 1e3
        s = time.perf_counter()
        scorer.score(many, args.rows_batch)
        batch = time.perf_counter() - s
        print(f"| {name} | {fit:.1f} | {np.median(ms):.2f} / {np.percentile(ms, 99):.2f} | {batch:.1f} |")


if __name__ == "__main__":
    main()
