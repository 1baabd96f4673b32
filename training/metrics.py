"""How good is a score? Ranking, calibration and regression metrics for the test snapshot.

Models and baselines are judged by the same functions, so a baseline that returns ties,
NaN or numbers that are not probabilities must be scored fairly rather than crash the run:

* ranking metrics (AUC, average precision, lift) only use the order of the scores, and a
  NaN score (no prediction) ranks below every real score;
* Brier score and calibration error only exist for probabilities, so they are NaN when a
  score is outside [0, 1] or missing, instead of a misleading number;
* AUC and average precision are NaN when the labels hold a single class (nothing to rank).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

CLASSIFICATION_KEYS = ("auc", "pr_auc", "brier", "ece", "lift_at_10pct")
REGRESSION_KEYS = ("mae", "rmse")


def _vector(values: object, name: str) -> np.ndarray:
    out = np.asarray(values, dtype="float64")
    if out.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {out.shape}")
    return out


def _pair(y_true: object, score: object, score_name: str = "score") -> tuple[np.ndarray, np.ndarray]:
    y = _vector(y_true, "y_true")
    s = _vector(score, score_name)
    if len(y) != len(s):
        raise ValueError(f"y_true has {len(y)} rows but {score_name} has {len(s)}")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    if np.isnan(y).any():
        raise ValueError("y_true has missing values")
    return y, s


def _binary(y: np.ndarray) -> np.ndarray:
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 and 1 (or booleans)")
    return y


def rank_scores(score: object) -> np.ndarray:
    """Average ranks (1 = lowest) with NaN ranked below every real score.

    Ranking metrics depend only on order and ties, so ranks are an exact stand-in for the
    scores; they are also finite, which scikit-learn requires, even when scores hold ±inf.
    """
    s = _vector(score, "score").copy()
    s[np.isnan(s)] = -np.inf
    return rankdata(s, method="average")


def _is_probability(p: np.ndarray) -> bool:
    return bool(np.all((p >= 0.0) & (p <= 1.0)))  # False for NaN too


def calibration_bins(y_true: object, p: object, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, mean predicted probability and observed rate in each of ``n_bins`` equal-width
    bins of [0, 1] (empty bins: count 0, NaN means).

    Bin b holds p in [b/n_bins, (b+1)/n_bins), the edges being the floats ``b / n_bins``;
    p = 1 falls in the last bin. The bin is ``floor(p * n_bins)`` rather than a search over
    ``linspace`` edges, whose rounding puts e.g. p = 0.3 in the bin below; as the product
    rounds too (``(1/49) * 49 < 1``), it is then corrected by one against the edges.
    """
    y, prob = _pair(y_true, p, "p")
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    if not _is_probability(prob):
        raise ValueError("p must be probabilities in [0, 1] without missing values")
    bins = np.clip(np.floor(prob * n_bins).astype(np.int64), 0, n_bins - 1)
    bins -= (bins > 0) & (prob < bins / n_bins)  # product rounded up across an edge
    bins += (bins < n_bins - 1) & (prob >= (bins + 1) / n_bins)  # product rounded down below one
    count = np.bincount(bins, minlength=n_bins).astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=prob, minlength=n_bins) / count
        rate = np.bincount(bins, weights=y, minlength=n_bins) / count
    return count, mean_p, rate


def expected_calibration_error(y_true: object, p: object, n_bins: int = 10) -> float:
    """Mean |observed rate - mean predicted probability| over the ``calibration_bins``,
    each bin weighted by its share of rows (empty bins weigh nothing)."""
    count, mean_p, rate = calibration_bins(y_true, p, n_bins)
    hit = count > 0
    return float(np.sum(np.abs(rate[hit] - mean_p[hit]) * count[hit]) / count.sum())


def descending_order(score: object) -> np.ndarray:
    """Row indices by descending score; ties keep row order (stable), NaN comes last."""
    s = _vector(score, "score")
    return np.argsort(np.where(np.isnan(s), np.inf, -s), kind="stable")


def lift_at(y_true: object, score: object, fraction: float = 0.10) -> float:
    """Positive rate among the top ``fraction`` of rows by score / overall positive rate.

    The top holds ``ceil(fraction * n)`` rows (at least one). Rows are ordered by
    descending score with a stable sort, so ties keep row order and the result is
    reproducible; NaN scores come last. NaN when there are no positives. With a
    non-negative value instead of a 0/1 label it is the value lift of the top rows.
    """
    y, s = _pair(y_true, score)
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    overall = float(np.mean(y))
    if overall == 0.0:
        return math.nan
    order = descending_order(s)
    k = max(1, math.ceil(fraction * len(y) - 1e-9))  # 1e-9: 0.1 * 30 is 3.0000000000000004
    return float(np.mean(y[order[:k]]) / overall)


def classification_metrics(y_true: object, score: object) -> dict[str, float]:
    """AUC, average precision, Brier, ECE and lift in the top 10 % of one score.

    See the module docstring for NaN rules; keys are ``CLASSIFICATION_KEYS``.
    """
    y, s = _pair(y_true, score)
    _binary(y)
    ranks = rank_scores(s)
    two_classes = 0.0 < y.sum() < len(y)
    prob = _is_probability(s)
    return {
        "auc": float(roc_auc_score(y, ranks)) if two_classes else math.nan,
        "pr_auc": float(average_precision_score(y, ranks)) if two_classes else math.nan,
        "brier": float(brier_score_loss(y, s, labels=[0, 1])) if prob else math.nan,
        "ece": expected_calibration_error(y, s) if prob else math.nan,
        "lift_at_10pct": lift_at(y, s, 0.10),
    }


def regression_metrics(y_true: object, y_pred: object) -> dict[str, float]:
    """Mean absolute error and root mean squared error (keys ``REGRESSION_KEYS``)."""
    y, pred = _pair(y_true, y_pred, "y_pred")
    if not np.isfinite(pred).all():
        raise ValueError("y_pred has missing or infinite values")
    return {"mae": float(mean_absolute_error(y, pred)), "rmse": float(root_mean_squared_error(y, pred))}
