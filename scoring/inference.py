"""Inference over a block of snapshot rows: every champion's outputs, and what the offer
engine reads, computed one way for the service, the nightly batch and the offline
evaluation.

Each champion scores through its ``training.predictor.Predictor`` (the one prediction
path); this module gathers their outputs for a block, turns them into the offer
engine's ``CustomerScores``, computes the population priors an unknown customer gets,
and the reason codes of a score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from features.definitions import slug
from scoring.champions import Champion
from scoring.nbo import CustomerScores
from scoring.uplift_scores import UpliftScores
from training.predictor import Block

#: scores a customer gets (and an unknown customer gets as population priors)
SCORE_KEYS = ("churn_probability", "next_purchase_probability", "expected_orders", "clv")


def score_block(champions: Mapping[str, Champion], block: Block, n: int, *,
                reasons: bool = False) -> dict[str, object]:
    """Every champion's outputs for ``n`` snapshot rows (a block); with ``reasons``, the
    TreeSHAP contributions of churn, next-purchase and clv under ``"reasons"``."""
    out: dict[str, object] = {"reasons": {}}
    for task, ch in champions.items():
        m = ch.model
        if task == "cross-sell":
            out["cross_sell"] = m.cross_sell(block, n)
            continue
        s = m.score(block, n, reasons=reasons)
        out.update(s.values)
        if reasons and s.contributions is not None:
            out["reasons"][task] = (s.contributions, s.inputs, m.features)
    if "avg_order_value" in block:
        out["avg_order_value"] = np.asarray(block["avg_order_value"], dtype="float64")
    return out


def to_customer_scores(ids: Sequence[str], found: np.ndarray, block: Block,
                       scored: Mapping[str, object], categories: Sequence[str], *,
                       uplift: UpliftScores | None = None) -> CustomerScores:
    """What the offer engine reads, from ``score_block``'s outputs (NaN for a task without
    a champion) and the uplift champion's (``scoring.uplift_scores``). The service, the
    batch job and the offline evaluation all build it here."""
    n, k = len(ids), len(categories)

    def col(key: str) -> np.ndarray:
        v = scored.get(key)
        return np.full(n, np.nan) if v is None else np.array(v, dtype="float64")

    xs = scored.get("cross_sell")
    xs = np.full((n, k), np.nan) if xs is None else np.array(xs)
    days = (np.column_stack([np.asarray(block[f"days_since_{slug(c)}"], dtype="float64") for c in categories])
            if k and all(f"days_since_{slug(c)}" in block for c in categories) else np.full((n, k), np.nan))
    segment = np.asarray(block.get("rfm_segment", np.full(n, None, dtype=object)), dtype=object)
    return CustomerScores(list(ids), np.asarray(found, dtype=bool), segment, col("churn_probability"),
                          col("next_purchase_probability"), col("expected_orders"), col("clv"),
                          col("avg_order_value"), xs, list(categories), days, dict(uplift or {}))


def priors(scored: Mapping[str, np.ndarray], categories: Sequence[str]) -> dict[str, object]:
    """Population means of a sample's scores: the answer for a customer the snapshot does not know."""
    out: dict[str, object] = {}
    for key in SCORE_KEYS:
        v = scored.get(key)
        out[key] = float(np.nanmean(v)) if v is not None and np.isfinite(v).any() else None
    xs = scored.get("cross_sell")
    out["cross_sell"] = ([float(np.nanmean(xs[:, k])) if np.isfinite(xs[:, k]).any() else math.nan
                          for k in range(len(categories))] if xs is not None else [])
    aov = scored.get("avg_order_value")
    out["avg_order_value"] = float(np.nanmedian(aov)) if aov is not None and np.isfinite(aov).any() else None
    return out


def apply_priors(cs: CustomerScores, found: np.ndarray, prior: Mapping[str, object]) -> CustomerScores:
    """Unknown customers (``found`` False) get the population priors, in place."""
    cold = ~np.asarray(found, dtype=bool)
    if not cold.any():
        return cs
    for key in (*SCORE_KEYS, "avg_order_value"):
        value = prior.get(key)
        if value is not None:
            getattr(cs, key)[cold] = value
    if len(cs.categories):
        cs.cross_sell[cold] = np.asarray(prior["cross_sell"], dtype="float64")
    return cs


def top_reasons(contributions: np.ndarray, inputs: np.ndarray, features: Sequence[str],
                k: int = 3) -> list[list[dict[str, object]]]:
    """For every row, the ``k`` features that moved its score most (TreeSHAP, raw model
    scale), largest first; features with no effect are left out."""
    n, f = contributions.shape
    if n == 0 or f == 0:
        return [[] for _ in range(n)]
    k = min(k, f)
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    c = np.round(contributions[rows, order], 4).tolist()
    v = inputs[rows, order].astype("float64")
    v = np.where(np.isnan(v), None, np.round(v, 4)).tolist()
    names = np.asarray(features, dtype=object)[order].tolist()
    out = []
    for i in range(n):
        out.append([{"feature": names[i][j], "value": v[i][j], "effect": "up" if c[i][j] > 0 else "down",
                     "contribution": c[i][j]} for j in range(k) if c[i][j] != 0])
    return out
