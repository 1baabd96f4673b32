"""How good is an uplift ranking? Qini and uplift curves, their normalised areas, uplift at k.

An uplift model is judged on a randomised log (outcome ``y``, ``treatment`` 0/1) by how
well its predicted uplift orders the customers: target the highest predicted uplift first,
and count the extra responses the treatment bought. Every function here reproduces the
definition of scikit-uplift 0.5.1 (``sklift.metrics``) exactly, ties included, so numbers
can be compared with the literature that uses it; the tests check this on random problems.

Rows are sorted by predicted uplift, highest first. Rows with equal predicted uplift are
one group: the curves have a point only after the whole group (a model that cannot tell
two customers apart must not get credit for an order it does not have). After the first
``n`` rows (``n`` at a group end), with ``n_t``/``n_c`` treated/control rows among them and
``r_t``/``r_c`` the sums of ``y`` over those rows:

* Qini curve: ``Q(n) = r_t - r_c * n_t / n_c`` (extra responses, control scaled to the
  treated count), ``r_c * n_t / n_c`` taken as 0 while ``n_c = 0``;
* uplift curve: ``U(n) = (r_t / n_t - r_c / n_c) * n`` (the response-rate gap applied to
  everyone targeted), each rate taken as 0 while its group is empty.

Both curves start at ``(0, 0)``. The coefficients compare the area between the curve and the
random line (straight from ``(0, 0)`` to the curve's end) with the same area for the perfect
ranking of the observed rows. Coefficients need a binary ``y``; curves and uplift at k also
accept a continuous one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

Strategy = Literal["overall", "by_group"]


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    out = np.asarray(values, dtype="float64")
    if out.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} has missing or infinite values")
    return out


def _inputs(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike,
            binary_y: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the three columns of an uplift evaluation and return them as float arrays."""
    y_ = _vector(y, "y")
    u = _vector(uplift, "uplift")
    t = _vector(treatment, "treatment")
    if not len(y_) == len(u) == len(t):
        raise ValueError(f"lengths differ: y has {len(y_)} rows, uplift {len(u)}, treatment {len(t)}")
    if not np.isin(t, (0.0, 1.0)).all():
        raise ValueError(f"treatment must hold only 0 (control) and 1 (treated), got values {np.unique(t)[:10]}")
    if not (t == 1).any():
        raise ValueError("no treated rows (treatment == 1): uplift needs both groups")
    if not (t == 0).any():
        raise ValueError("no control rows (treatment == 0): uplift needs both groups")
    if binary_y and not np.isin(y_, (0.0, 1.0)).all():
        raise ValueError("y must hold only 0 and 1 for the normalised coefficients (the perfect curve "
                         "is defined for binary outcomes)")
    return y_, u, t


def _cumulative(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray):
    """Cumulative counts at the end of each group of tied predictions, best group first.

    Returns ``n, n_t, r_t, n_c, r_c`` (rows, treated rows, treated outcome sum, control rows,
    control outcome sum among the first ``n`` rows). The order is sklift's: a stable ascending
    sort reversed, which keeps ties contiguous.
    """
    order = np.argsort(uplift, kind="mergesort")[::-1]
    y, uplift, treatment = y[order], uplift[order], treatment[order]
    ends = np.r_[np.flatnonzero(np.diff(uplift)), uplift.size - 1]
    n = (ends + 1).astype("float64")
    n_t = np.cumsum(treatment)[ends]
    r_t = np.cumsum(y * treatment)[ends]
    r_c = np.cumsum(y * (1.0 - treatment))[ends]
    return n, n_t, r_t, n - n_t, r_c


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (an empty group contributes nothing yet)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def _qini_points(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, n_t, r_t, n_c, r_c = _cumulative(y, uplift, treatment)
    return np.r_[0.0, n], np.r_[0.0, r_t - r_c * _ratio(n_t, n_c)]


def _uplift_points(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, n_t, r_t, n_c, r_c = _cumulative(y, uplift, treatment)
    return np.r_[0.0, n], np.r_[0.0, (_ratio(r_t, n_t) - _ratio(r_c, n_c)) * n]


def qini_curve(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve: after targeting the first ``n`` rows, ``Q(n) = r_t - r_c * n_t / n_c``.

    Returns ``(x, qini)``: ``x`` the number of rows targeted at each group end (starting at 0),
    ``qini`` the extra responses among them. Equals ``sklift.metrics.qini_curve``.
    """
    return _qini_points(*_inputs(y, uplift, treatment))


def uplift_curve(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Uplift curve: after targeting the first ``n`` rows, ``U(n) = (r_t / n_t - r_c / n_c) * n``.

    Returns ``(x, values)`` like :func:`qini_curve`. Equals ``sklift.metrics.uplift_curve``.
    """
    return _uplift_points(*_inputs(y, uplift, treatment))


def _normalised_area(x: np.ndarray, curve: np.ndarray, x_best: np.ndarray, best: np.ndarray) -> float:
    """(area under curve - random) / (area under perfect - random); NaN if the latter is 0.

    The random line joins (0, 0) to the perfect curve's end, which is also the model
    curve's end (both sum the same rows).
    """
    random = x_best[-1] * best[-1] / 2.0
    perfect = float(np.trapezoid(best, x_best)) - random
    if perfect == 0.0:
        return float("nan")  # no ranking can beat random: nothing to normalise by
    return (float(np.trapezoid(curve, x)) - random) / perfect


def qini_coefficient(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, negative_effect: bool = True) -> float:
    """Qini coefficient: area between the Qini curve and the random line, over the perfect one's.

    The perfect Qini curve with ``negative_effect=True`` ranks treated responders first and
    control responders last (``score = y * t - y * (1 - t)``), so it shows the harm done to
    sleeping dogs too; with ``negative_effect=False`` it assumes no one is harmed: all ``Q``
    extra responses (``Q`` = the Qini curve's end) come from the first ``Q`` rows, then it is
    flat: points ``(0, 0), (Q, Q), (n, Q)``. That variant needs ``Q >= 0``.

    NaN when the perfect curve has no area over the random line. Equals
    ``sklift.metrics.qini_auc_score``.
    """
    y_, u, t = _inputs(y, uplift, treatment, binary_y=True)
    if not isinstance(negative_effect, bool):
        raise TypeError(f"negative_effect must be a bool, got {type(negative_effect).__name__}")
    x, q = _qini_points(y_, u, t)
    if negative_effect:
        x_best, best = _qini_points(y_, y_ * t - y_ * (1.0 - t), t)
    else:
        total = q[-1]
        if total < 0:
            raise ValueError(f"negative_effect=False assumes the treatment does no harm overall, but the "
                             f"Qini total is {total:.6g} < 0; use negative_effect=True")
        x_best, best = np.array([0.0, total, len(y_)]), np.array([0.0, total, total])
    return _normalised_area(x, q, x_best, best)


def auuc(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Normalised area under the uplift curve (AUUC), over the perfect uplift curve's.

    The perfect ranking scores ``2 * (y == t) + s`` with ``s = y`` when control responders
    outnumber treated non-responders and ``s = t`` otherwise: treated responders and control
    non-responders first, then the other two kinds in the order that keeps the curve highest.
    NaN when the perfect curve has no area over the random line. Equals
    ``sklift.metrics.uplift_auc_score``.
    """
    y_, u, t = _inputs(y, uplift, treatment, binary_y=True)
    control_responders = np.sum((y_ == 1) & (t == 0))
    treated_non_responders = np.sum((y_ == 0) & (t == 1))
    summand = y_ if control_responders > treated_non_responders else t
    x, values = _uplift_points(y_, u, t)
    x_best, best = _uplift_points(y_, 2.0 * (y_ == t) + summand, t)
    return _normalised_area(x, values, x_best, best)


def uplift_at_k(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, k: float,
                strategy: Strategy = "overall") -> float:
    """Response rate of treated minus control among the top ``k`` share by predicted uplift.

    * ``"overall"``: take the first ``floor(k * n)`` rows of all rows, compare the treated and
      control rows among them;
    * ``"by_group"``: take the first ``floor(k * n_t)`` treated rows and the first
      ``floor(k * n_c)`` control rows, each group ranked on its own.

    Ties at the cut are broken like sklift (the later row first). NaN when the selection
    holds no treated or no control row (no rate to compare). Equals
    ``sklift.metrics.uplift_at_k`` for ``k`` in (0, 1); ``k = 1`` is the whole log.
    """
    y_, u, t = _inputs(y, uplift, treatment)
    if isinstance(k, bool) or not isinstance(k, (int, float, np.floating, np.integer)) or not 0 < k <= 1:
        raise ValueError(f"k must be a share of rows in (0, 1], got {k!r}")
    if strategy not in ("overall", "by_group"):
        raise ValueError(f"strategy must be 'overall' or 'by_group', got {strategy!r}")
    order = np.argsort(u, kind="mergesort")[::-1]
    y_, t = y_[order], t[order]
    if strategy == "overall":
        size = int(len(y_) * k)
        if size == 0:
            raise ValueError(f"k={k} of {len(y_)} rows selects no row")
        top_y, top_t = y_[:size], t[:size]
        treated, control = top_y[top_t == 1], top_y[top_t == 0]
    else:
        treated_all, control_all = y_[t == 1], y_[t == 0]
        size_t, size_c = int(len(treated_all) * k), int(len(control_all) * k)
        if size_t == 0 or size_c == 0:
            raise ValueError(f"k={k} selects no row of a group ({len(treated_all)} treated, "
                             f"{len(control_all)} control rows)")
        treated, control = treated_all[:size_t], control_all[:size_c]
    if len(treated) == 0 or len(control) == 0:
        return float("nan")
    return float(treated.mean() - control.mean())


def qini_frame(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, points: int = 101) -> pd.DataFrame:
    """The Qini curve on an even grid of targeted shares, for plots and saved artifacts.

    Columns: ``share_targeted`` (0 to 1 in ``points`` steps), ``qini`` (the model's Qini
    curve, linearly interpolated between its points, which is the curve the coefficient
    integrates) and ``random`` (the straight line to the same end: random targeting).
    """
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    x, q = qini_curve(y, uplift, treatment)
    share = np.linspace(0.0, 1.0, points)
    return pd.DataFrame({"share_targeted": share, "qini": np.interp(share, x / x[-1], q), "random": share * q[-1]})
