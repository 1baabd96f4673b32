"""BG/NBD purchase model (+ Gamma-Gamma spend) on feature snapshot columns, via ``lifetimes``.

The textbook CLV model of Fader, Hardie & Lee (2005) needs only four numbers per customer,
all already in the snapshot, so it serves twice: as model inputs (``bgnbd_*`` columns) and
as the literature's baseline. Time is in days throughout, like every snapshot column.

``BGNBD`` follows scikit-learn conventions (nothing in ``__init__`` but storing arguments,
``fit`` returns ``self``, learned attributes end in ``_``, inputs never mutated) and keeps
only plain floats once fitted: it is pickled inside the model MLflow stores, and a
lifetimes fitter would drag its training data and a lambda along.

References: Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing
Science 24(2); Hardie's notes 021 (P(alive)) and 025 (Gamma-Gamma).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

log = logging.getLogger(__name__)

#: snapshot columns the model reads
INPUT_COLUMNS = ("purchase_days", "recency_days", "tenure_days", "avg_order_value")
#: columns ``BGNBD.transform`` returns, in order
OUTPUT_COLUMNS = ("bgnbd_p_alive", "bgnbd_expected_purchases", "bgnbd_p_purchase", "bgnbd_expected_spend")
#: stronger L2 penalizers tried, in order, when a fit fails with the configured one
FALLBACK_PENALIZERS = (0.01, 0.1)

#: lower bound on the dropout Beta's shapes a and b when the unbounded optimum is degenerate
MIN_DROPOUT_SHAPE = 0.01
#: what lifetimes and its optimiser raise when a fit goes wrong (ConvergenceError is a ValueError)
_FIT_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError)


class BGNBDFitError(RuntimeError):
    """No penalizer gave a usable fit."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence lifetimes without leaking global changes.

    lifetimes sets warning filters on import and inside every likelihood call, warns about
    overflow while the optimiser explores, and prints the optimiser's state when it fails;
    all of that is confined here (filters are restored on exit).
    """
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    try:
        return frame[column].to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {column!r} must be numeric: {exc}") from exc


def rfm_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """lifetimes' calibration summary (frequency, recency, T, monetary_value) in days.

    * frequency = purchase_days - 1: repeat purchase *days*, as BG/NBD counts them;
    * recency = tenure_days - recency_days: days between the first and last purchase;
    * T = tenure_days: days from the first purchase to as_of (the customer's age);
    * monetary_value = avg_order_value: only meaningful where frequency > 0 and it is
      positive (Gamma-Gamma ignores the rest).

    One row per input row, positional (fresh RangeIndex). Raises KeyError naming a missing
    column and ValueError naming a column whose values cannot come from a snapshot.
    """
    for column in INPUT_COLUMNS:
        if column not in frame.columns:
            raise KeyError(f"BG/NBD needs snapshot column {column!r}")
    purchase_days = _numbers(frame, "purchase_days")
    recency_days = _numbers(frame, "recency_days")
    tenure_days = _numbers(frame, "tenure_days")
    value = _numbers(frame, "avg_order_value")
    for column, values in (("purchase_days", purchase_days), ("recency_days", recency_days),
                           ("tenure_days", tenure_days)):
        if not np.isfinite(values).all():
            raise ValueError(f"column {column!r} has {int((~np.isfinite(values)).sum())} missing or infinite values")
    if (purchase_days < 1).any() or (purchase_days != np.round(purchase_days)).any():
        raise ValueError("column 'purchase_days' must be whole numbers >= 1 (a snapshot holds buyers only)")
    if (recency_days < 0).any():
        raise ValueError("column 'recency_days' must not be negative")
    if (recency_days > tenure_days).any():
        raise ValueError("column 'recency_days' exceeds 'tenure_days' (last purchase before the first)")
    one_day = purchase_days == 1
    if (recency_days[one_day] != tenure_days[one_day]).any():
        raise ValueError("rows with purchase_days == 1 must have recency_days == tenure_days "
                         "(their first and last purchase are the same day)")
    return pd.DataFrame({
        "frequency": (purchase_days - 1).astype("int64"),
        "recency": tenure_days - recency_days,
        "T": tenure_days,
        "monetary_value": value,
    })


# ---------------------------------------------------------------------------- the model's formulas
def bgnbd_predictions(params: dict[str, float], frequency: np.ndarray, recency: np.ndarray, T: np.ndarray,
                      t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(alive), expected repeat purchases in (T, T + t] and P(at least one), given history.

    The first two are lifetimes' formulas (Hardie's note 021 and FHL eq. 10), computed here
    in numpy (tests compare them with lifetimes' own methods). lifetimes 0.11 has no
    conditional P(no purchase), so it is derived here: only the "still alive" part of the
    likelihood, (1-p)^x λ^x e^{-λT}, lets a customer buy again, and under it λ's posterior
    is Gamma(r + x, α + T), independent of p. With no purchase there is no chance to drop
    out, so

        P(X(T, T+t) = 0 | x, t_x, T) = 1 - P(alive) + P(alive) ((α+T) / (α+T+t))^(r+x).
    """
    # lifetimes' formulas in plain numpy (no fitter object, no global warning filters), so
    # that scoring is cheap per call and safe from many threads at once.
    from scipy.special import expit, hyp2f1

    r, alpha, a, b = (float(params[k]) for k in ("r", "alpha", "a", "b"))
    x = np.asarray(frequency, dtype="float64")
    tx = np.asarray(recency, dtype="float64")
    T = np.asarray(T, dtype="float64")
    with np.errstate(all="ignore"):
        log_div = (r + x) * np.log((alpha + T) / (alpha + tx)) + np.log(a / (b + np.maximum(x, 1) - 1))
        p_alive = np.where(x == 0, 1.0, expit(-log_div))
        _a, _b, _c, _z = r + x, b + x, a + b + x - 1, t / (alpha + T + t)
        ln_hyp = np.log(hyp2f1(_a, _b, _c, _z))
        ln_hyp_alt = np.log(hyp2f1(_c - _a, _c - _b, _c, _z)) + (_c - _a - _b) * np.log(1 - _z)
        ln_hyp = np.where(np.isinf(ln_hyp), ln_hyp_alt, ln_hyp)
        numerator = (a + b + x - 1) / (a - 1) * (1 - np.exp(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T))))
        denominator = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + tx)) ** (r + x)
        expected = numerator / denominator
        p_alive = np.clip(np.broadcast_to(p_alive, np.shape(T)), 0.0, 1.0)
        # 1 - ((α+T)/(α+T+t))^(r+x), in a form that keeps its precision when it is tiny
        buys_if_alive = -np.expm1((r + x) * -np.log1p(t / (alpha + T)))
        p_purchase = np.clip(p_alive * buys_if_alive, 0.0, 1.0)
    return p_alive, np.clip(expected, 0.0, None), p_purchase


def gamma_gamma_value(params: dict[str, float], frequency: np.ndarray, monetary_value: np.ndarray) -> np.ndarray:
    """Expected value of a future purchase (Hardie's note 025, eq. 5): the customer's own
    average shrunk towards the population mean p v / (q - 1), the more so the fewer their
    repeat purchases. Customers without a usable own average (frequency 0, value not
    positive or missing) get the population mean."""
    p, q, v = params["p"], params["q"], params["v"]
    population = p * v / (q - 1.0)
    usable = (frequency > 0) & np.isfinite(monetary_value) & (monetary_value > 0)
    weight = np.where(usable, p * frequency / (p * frequency + q - 1.0), 0.0)
    own = np.where(usable, monetary_value, 0.0)
    return (1.0 - weight) * population + weight * own


# ---------------------------------------------------------------------------- fitting
def _penalizers(first: float) -> list[float]:
    return [first, *[p for p in FALLBACK_PENALIZERS if p > first]]


def fit_bgnbd_params(summary: pd.DataFrame, penalizer: float) -> dict[str, float]:
    """r, α (per day), a, b by maximum likelihood; raises what lifetimes raises, or
    ValueError when the optimum is unusable (non-finite, or predictions that are not)."""
    from lifetimes import BetaGeoFitter

    # customers with the same (x, t_x, T) share a likelihood term: fit each pattern once
    patterns = summary.groupby(["frequency", "recency", "T"], sort=True).size().reset_index(name="n")
    x, tx, T = (patterns[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))

    def attempt(bounds: list | None) -> dict[str, float]:
        with _quiet():
            fitter = BetaGeoFitter(penalizer_coef=penalizer).fit(
                patterns["frequency"].to_numpy(), patterns["recency"].to_numpy(), patterns["T"].to_numpy(),
                weights=patterns["n"].to_numpy(), **({"bounds": bounds} if bounds else {}))
        params = {k: float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")}
        if not all(np.isfinite(v) and v > 0 for v in params.values()) or params["a"] == 1.0:
            raise ValueError(f"unusable BG/NBD parameters {params}")
        checks = bgnbd_predictions(params, x, tx, T, float(max(T.max(), 1.0)))
        if not all(np.isfinite(c).all() for c in checks):
            raise ValueError(f"BG/NBD parameters {params} give non-finite predictions")
        return params

    try:
        return attempt(None)
    except ValueError as exc:
        # Short histories (a snapshot weeks after the data starts) show almost no dropout:
        # the optimum runs off to a, b -> 0, where the predictions are 0/0. Keeping a and b
        # at least MIN_DROPOUT_SHAPE (log-space bounds) gives the "nobody has left yet"
        # model that the data supports, with finite predictions.
        log.info("BG/NBD unbounded fit unusable (%s); refitting with a, b >= %s", exc, MIN_DROPOUT_SHAPE)
        low = float(np.log(MIN_DROPOUT_SHAPE))
        return attempt([(None, None), (None, None), (low, None), (low, None)])


def fit_gamma_gamma_params(frequency: np.ndarray, monetary_value: np.ndarray, penalizer: float) -> dict[str, float]:
    """p, q, v by maximum likelihood on repeat customers with a positive average value.

    Values are divided by their mean before fitting (v scaled back after), so that the L2
    penalizer means the same whatever the currency; lifetimes does the same with time for
    BG/NBD. Requires q > 1, without which the population mean value is infinite.
    """
    from lifetimes import GammaGammaFitter

    scale = float(np.mean(monetary_value))
    with _quiet():
        fitter = GammaGammaFitter(penalizer_coef=penalizer).fit(frequency, monetary_value / scale)
    params = {"p": float(fitter.params_["p"]), "q": float(fitter.params_["q"]),
              "v": float(fitter.params_["v"]) * scale}
    if not all(np.isfinite(v) and v > 0 for v in params.values()) or params["q"] <= 1.0:
        raise ValueError(f"unusable Gamma-Gamma parameters {params} (q must exceed 1)")
    return params


class BGNBD:
    """BG/NBD purchases and Gamma-Gamma value per purchase, fitted on one snapshot.

    Parameters
    ----------
    penalizer : L2 penalty on the (lifetimes-scaled) parameters; when a fit fails, the
        stronger ``FALLBACK_PENALIZERS`` are tried before giving up with ``BGNBDFitError``.
    spend : fit Gamma-Gamma for ``bgnbd_expected_spend``; without it every customer's
        value per purchase is the fitted frame's mean positive ``avg_order_value``.

    Learned: ``params_`` (r, alpha, a, b; alpha per day), ``gg_params_`` (p, q, v, or None
    when ``spend`` is False), ``penalizer_`` and ``gg_penalizer_`` (the ones that worked),
    ``population_value_`` (value per purchase of a customer without history),
    ``n_customers_``.
    """

    input_columns = INPUT_COLUMNS

    def __init__(self, penalizer: float = 0.001, spend: bool = True):
        self.penalizer = penalizer
        self.spend = spend

    def fit(self, frame: pd.DataFrame) -> BGNBD:
        """Fit on snapshot rows. Each customer counts once: rows repeated per (customer,
        category), as cross-sell frames are, are collapsed on customer_id (and as_of)."""
        if self.penalizer < 0:
            raise ValueError("penalizer must not be negative")
        if "customer_id" in frame.columns:
            keys = [c for c in ("customer_id", "as_of") if c in frame.columns]
            frame = frame.drop_duplicates(subset=keys)
        summary = rfm_summary(frame)
        if len(summary) == 0:
            raise ValueError("BG/NBD needs at least one customer to fit")
        if summary["T"].max() <= 0:
            raise ValueError("BG/NBD needs customers with tenure_days > 0")

        self.params_, self.penalizer_ = self._ladder("BG/NBD", lambda pen: fit_bgnbd_params(summary, pen))

        repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
        positive = summary["monetary_value"][summary["monetary_value"] > 0]
        if self.spend:
            if len(repeat) == 0:
                raise ValueError("Gamma-Gamma needs repeat customers with a positive avg_order_value")
            x = repeat["frequency"].to_numpy(dtype="float64")
            m = repeat["monetary_value"].to_numpy(dtype="float64")
            self.gg_params_, self.gg_penalizer_ = self._ladder(
                "Gamma-Gamma", lambda pen: fit_gamma_gamma_params(x, m, pen))
            p, q, v = (self.gg_params_[k] for k in ("p", "q", "v"))
            self.population_value_ = float(p * v / (q - 1.0))
        else:
            self.gg_params_, self.gg_penalizer_ = None, None
            self.population_value_ = float(positive.mean()) if len(positive) else 0.0
        self.n_customers_ = len(summary)
        return self

    def _ladder(self, what: str, fit_one) -> tuple[dict[str, float], float]:
        errors = []
        for pen in _penalizers(self.penalizer):
            try:
                params = fit_one(pen)
            except _FIT_ERRORS as exc:
                errors.append(f"penalizer {pen}: {type(exc).__name__}: {str(exc).strip()}")
                log.warning("%s fit failed with penalizer %s (%s); trying a stronger one", what, pen,
                            str(exc).strip())
                continue
            return params, pen
        raise BGNBDFitError(f"{what} did not fit with any penalizer: " + "; ".join(errors))

    def transform(self, frame: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
        """``OUTPUT_COLUMNS`` for each row of ``frame`` (positional, fresh RangeIndex):
        P(alive), expected repeat purchases in the next ``horizon_days``, P(at least one
        purchase in them), and expected spend = expected purchases x expected value per
        purchase. Finite, probabilities in [0, 1]."""
        if not hasattr(self, "params_"):
            raise NotFittedError("BGNBD is not fitted yet: call fit first")
        if not horizon_days > 0:
            raise ValueError("horizon_days must be positive")
        summary = rfm_summary(frame)
        x = summary["frequency"].to_numpy(dtype="float64")
        tx = summary["recency"].to_numpy(dtype="float64")
        T = summary["T"].to_numpy(dtype="float64")
        p_alive, expected, p_purchase = bgnbd_predictions(self.params_, x, tx, T, float(horizon_days))
        if self.gg_params_ is not None:
            value = gamma_gamma_value(self.gg_params_, x, summary["monetary_value"].to_numpy(dtype="float64"))
        else:
            value = np.full(len(summary), self.population_value_)
        out = pd.DataFrame({
            "bgnbd_p_alive": p_alive,
            "bgnbd_expected_purchases": expected,
            "bgnbd_p_purchase": p_purchase,
            "bgnbd_expected_spend": expected * value,
        })
        bad = ~np.isfinite(out.to_numpy()).all(axis=1)
        if bad.any():  # never silently hand NaN to a model or a report
            raise FloatingPointError(f"BG/NBD produced non-finite values for {int(bad.sum())} rows "
                                     f"(params {self.params_}); first at row {int(np.argmax(bad))}")
        return out
