"""Evaluation plots logged with every training run.

Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot: no backend, no
display and no global state are involved, and ``fig.savefig`` renders with Agg.

Each function takes the truth and one or more named scores and returns a Figure; the
caller saves it. Scores with NaN are ranked last, as in ``training.metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from training.metrics import calibration_bins, descending_order, rank_scores


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def roc_plot(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Figure:
    fig, ax = _figure("ROC on the test snapshot")
    for name, s in scores.items():
        r = rank_scores(s)
        fpr, tpr, _ = roc_curve(y, r)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, r):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    return fig


def pr_plot(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Figure:
    fig, ax = _figure("Precision-recall on the test snapshot")
    for name, s in scores.items():
        precision, recall, _ = precision_recall_curve(y, rank_scores(s))
        ax.plot(recall, precision, label=name)
    ax.axhline(float(np.mean(y)), ls=":", color="grey", label="base rate")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=8)
    return fig


def gains_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of rows targeted (by descending score) vs share of the total of ``y`` captured."""
    y = np.asarray(y, dtype="float64")
    order = descending_order(score)
    captured = np.cumsum(y[order])
    total = captured[-1] if len(captured) and captured[-1] != 0 else 1.0
    share = np.arange(1, len(y) + 1) / len(y)
    return np.concatenate([[0.0], share]), np.concatenate([[0.0], captured / total])


def gains_plot(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Figure:
    fig, ax = _figure("Cumulative gains on the test snapshot")
    for name, s in scores.items():
        x, g = gains_curve(y, s)
        ax.plot(x, g, label=name)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="random")
    ax.set_xlabel("share of customers targeted (highest score first)")
    ax.set_ylabel("share of the outcome captured")
    ax.legend(fontsize=8)
    return fig


def calibration_plot(y: np.ndarray, probabilities: Mapping[str, np.ndarray], n_bins: int = 10) -> Figure:
    fig, ax = _figure("Calibration on the test snapshot")
    for name, p in probabilities.items():
        count, mean_p, rate = calibration_bins(y, np.clip(p, 0.0, 1.0), n_bins)
        hit = count > 0
        ax.plot(mean_p[hit], rate[hit], marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.legend(fontsize=8)
    return fig


def importance_plot(features: Sequence[str], gain: np.ndarray, top: int = 20) -> Figure:
    order = np.argsort(-np.asarray(gain, dtype="float64"))[:top][::-1]
    fig = Figure(figsize=(6, 0.3 * len(order) + 1.2))
    ax = fig.add_subplot()
    ax.barh([features[i] for i in order], np.asarray(gain)[order])
    ax.set_title("Feature importance (total gain)")
    ax.set_xlabel("gain")
    fig.tight_layout()
    return fig


def shap_summary_plot(contributions: np.ndarray, values: np.ndarray, features: Sequence[str],
                      top: int = 15, seed: int = 0) -> Figure:
    """Beeswarm-style summary: per feature, each row's contribution, coloured by the
    feature's value (rank within the sample; grey when missing)."""
    contributions = np.asarray(contributions, dtype="float64")
    values = np.asarray(values, dtype="float64")
    order = np.argsort(-np.abs(contributions).mean(axis=0))[:top][::-1]
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(7, 0.35 * len(order) + 1.5))
    ax = fig.add_subplot()
    for row, j in enumerate(order):
        v = values[:, j]
        colour = np.full(len(v), 0.5)
        ok = np.isfinite(v)
        if ok.sum() > 1:
            colour[ok] = (np.argsort(np.argsort(v[ok])) / max(ok.sum() - 1, 1))
        y = row + rng.uniform(-0.3, 0.3, len(v))
        ax.scatter(contributions[ok, j], y[ok], c=colour[ok], cmap="coolwarm", s=4, vmin=0, vmax=1)
        ax.scatter(contributions[~ok, j], y[~ok], color="lightgrey", s=4)
    ax.set_yticks(range(len(order)), [features[j] for j in order])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("contribution to the raw score (TreeSHAP; red = high feature value)")
    ax.set_title("SHAP summary on the test snapshot")
    fig.tight_layout()
    return fig
