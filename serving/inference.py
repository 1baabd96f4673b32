"""Fast inference over a trained ``TaskModel``: column arrays in, scores out.

``TaskModel.predict`` works on pandas frames, which costs milliseconds per call in
per-column overhead; a service answering one customer in a few milliseconds, and a
nightly job scoring millions, cannot afford it. ``CompiledModel`` precomputes what a
model needs (column order, string vocabularies, the calibration curve, BG/NBD
parameters) once, then scores a ``Block`` (column name -> 1-D numpy array, one entry
per customer) straight on the LightGBM boosters over float32 matrices, in as large a
chunk as the caller passes. Outputs equal ``TaskModel.predict`` (tests check it on
Complete Journey); the difference is where invalid inputs are concerned: a row the
BG/NBD inputs do not describe (missing, negative) gets NaN BG/NBD inputs, which
LightGBM routes like any missing value, instead of an error for the whole call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import slug
from training.bgnbd import bgnbd_predictions, gamma_gamma_value
from training.model import CROSS_SELL_CONTEXT, TaskModel

#: one customer per entry: snapshot column -> values (float64 for numbers, object for strings)
Block = Mapping[str, np.ndarray]

#: outputs per task, in response order
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "churn": ("churn_probability",),
    "next-purchase": ("next_purchase_probability", "expected_orders"),
    "clv": ("clv",),
}


def block_from_frame(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Snapshot rows (a frame) as a block: numbers as float64 (NaN for missing), the rest as objects."""
    out: dict[str, np.ndarray] = {}
    for c in columns if columns is not None else frame.columns:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            out[c] = s.to_numpy(dtype="float64", na_value=np.nan)
        else:
            out[c] = s.to_numpy(dtype=object, na_value=None)
    return out


def block_from_records(records: Sequence[Mapping[str, object]], columns: Sequence[str],
                       string_columns: set[str]) -> dict[str, np.ndarray]:
    """A few snapshot rows (dicts, as ``OnlineStore.get`` returns them) as a block."""
    out: dict[str, np.ndarray] = {}
    for c in columns:
        values = [r.get(c) for r in records]
        if c in string_columns:
            out[c] = np.array(values, dtype=object)
        else:
            out[c] = np.array([np.nan if v is None else v for v in values], dtype="float64")
    return out


#: below this many rows LightGBM predicts on the calling thread: a few rows gain nothing from
#: OpenMP, and concurrent requests each starting a team of spinning threads on 2 cores
#: stall one another
SINGLE_THREAD_ROWS = 64


def _threads(n: int) -> int:
    """LightGBM ``num_threads`` for ``n`` rows (0: OpenMP's default, every core)."""
    return 1 if n < SINGLE_THREAD_ROWS else 0


def _calibration(calibrator) -> tuple[str, object]:
    """The calibration curve as numpy data: isotonic knots or Platt coefficients."""
    if calibrator is None or calibrator.model_ is None:
        return "none", None
    if calibrator.method == "isotonic":
        iso = calibrator.model_
        return "isotonic", (np.asarray(iso.X_thresholds_, dtype="float64"),
                            np.asarray(iso.y_thresholds_, dtype="float64"))
    lr = calibrator.model_
    return "sigmoid", (float(lr.coef_[0, 0]), float(lr.intercept_[0]))


@dataclass
class Scored:
    """A model's outputs for a block: output name -> array, plus (optionally) per-row reasons."""

    values: dict[str, np.ndarray]
    contributions: np.ndarray | None = None  # rows x features, raw scale, main score
    inputs: np.ndarray | None = None  # the matrix the contributions are of


class CompiledModel:
    """A ``TaskModel`` ready for numpy inference. Thread-safe (LightGBM predict is)."""

    def __init__(self, model: TaskModel):
        self.model = model
        self.task = model.task
        self.features = list(model.features)
        enc = model.encoder
        self._vocab: dict[str, dict[str, int]] = dict(getattr(enc, "vocab_", {}))
        self._vocab_index: dict[str, pd.Index] = {}
        self.columns = model.snapshot_columns()
        self.string_columns = set(self._vocab) - set(CROSS_SELL_CONTEXT)
        self._cal_kind, self._cal = _calibration(model.calibrator)
        self.categories = list(model.categories)
        self._xs_code = {c: float(self._vocab.get("xs_category", {}).get(c, np.nan)) for c in self.categories}
        if model.task == "cross-sell" and model.per_category:
            raise ValueError("per-category cross-sell models are scored through TaskModel.predict")

    # ------------------------------------------------------------------ inputs
    def _bgnbd(self, block: Block) -> dict[str, np.ndarray]:
        g = self.model.bgnbd
        pd_ = np.asarray(block["purchase_days"], dtype="float64")
        rec = np.asarray(block["recency_days"], dtype="float64")
        ten = np.asarray(block["tenure_days"], dtype="float64")
        val = np.asarray(block["avg_order_value"], dtype="float64")
        ok = (np.isfinite(pd_) & np.isfinite(rec) & np.isfinite(ten) & (pd_ >= 1) & (rec >= 0) & (rec <= ten))
        x = np.where(ok, pd_ - 1.0, 0.0)
        tx = np.where(ok, ten - rec, 0.0)
        T = np.where(ok, ten, 1.0)
        p_alive, expected, p_purchase = bgnbd_predictions(g.params_, x, tx, T, float(self.model.horizon_days))
        if g.gg_params_ is not None:
            value = gamma_gamma_value(g.gg_params_, x, np.where(ok, val, np.nan))
        else:
            value = np.full(len(x), g.population_value_)
        nan = np.where(ok, 1.0, np.nan)
        return {"bgnbd_p_alive": p_alive * nan, "bgnbd_expected_purchases": expected * nan,
                "bgnbd_p_purchase": p_purchase * nan, "bgnbd_expected_spend": expected * value * nan}

    def _column(self, name: str, values: np.ndarray) -> np.ndarray:
        vocab = self._vocab.get(name)
        if vocab is None:
            return np.asarray(values, dtype="float64")
        if len(values) < 16:
            return np.fromiter((vocab.get(v, np.nan) if isinstance(v, str) else np.nan for v in values),
                               dtype="float64", count=len(values))
        index = self._vocab_index.get(name)
        if index is None:  # built once per column: codes are the vocabulary's positions
            index = self._vocab_index[name] = pd.Index(sorted(vocab, key=vocab.__getitem__))
        codes = index.get_indexer(pd.Index(values, dtype=object)).astype("float64")
        codes[codes < 0] = np.nan  # unknown or missing
        return codes

    def matrix(self, block: Block, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The model's float32 input matrix (rows = customers) and the BG/NBD columns."""
        derived = self._bgnbd(block) if self.model.bgnbd is not None else {}
        x = np.empty((n, len(self.features)), dtype=np.float32)
        for j, name in enumerate(self.features):
            if name in derived:
                x[:, j] = derived[name]
            elif name in CROSS_SELL_CONTEXT:
                x[:, j] = np.nan  # filled per category by cross_sell
            elif name in block:
                x[:, j] = self._column(name, block[name])
            else:
                raise KeyError(f"input lacks the model's feature column {name!r}")
        return x, derived

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        if self._cal_kind == "isotonic":
            xs, ys = self._cal
            return np.interp(p, xs, ys)
        if self._cal_kind == "sigmoid":
            a, b = self._cal
            logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
            return 1.0 / (1.0 + np.exp(-(a * logit + b)))
        return p

    # ----------------------------------------------------------------- outputs
    def score(self, block: Block, n: int, *, reasons: bool = False) -> Scored:
        """Outputs for ``n`` customers (not cross-sell: see ``cross_sell``)."""
        if self.task == "cross-sell":
            raise ValueError("use cross_sell() for the cross-sell model")
        x, derived = self.matrix(block, n)
        m = self.model
        threads = _threads(n)
        contrib = m.booster.predict(x, pred_contrib=True, num_threads=threads)[:, :-1] if reasons and n else None
        if n == 0:
            return Scored({k: np.empty(0) for k in TASK_OUTPUTS[self.task]})
        if self.task == "clv":
            offset = derived["bgnbd_expected_spend"] if m.residual_of_bgnbd else 0.0
            value = np.clip(m.booster.predict(x, num_threads=threads) + np.nan_to_num(offset), 0.0, None)
            return Scored({"clv": value}, contrib, x)
        p = self._calibrate(m.booster.predict(x, num_threads=threads))
        if self.task == "churn":
            return Scored({"churn_probability": p}, contrib, x)
        orders = np.clip(m.count_booster.predict(x, num_threads=threads), 0.0, None)
        return Scored({"next_purchase_probability": p, "expected_orders": orders}, contrib, x)

    def cross_sell(self, block: Block, n: int) -> np.ndarray:
        """Customers x categories probabilities; NaN where the customer is outside the
        cross-sell population (bought the category within the lookback days)."""
        m = self.model
        k = len(self.categories)
        out = np.full((n, k), np.nan)
        if n == 0 or k == 0:
            return out
        x, _ = self.matrix(block, n)
        days = np.column_stack([np.asarray(block[f"days_since_{slug(c)}"], dtype="float64") for c in self.categories])
        share = np.column_stack([np.asarray(block[f"spend_share_{slug(c)}"], dtype="float64")
                                 for c in self.categories])
        eligible = np.isnan(days) | (days > m.lookback_days)
        rows, cats = np.nonzero(eligible)
        if len(rows) == 0:
            return out
        xr = x[rows]
        idx = {name: j for j, name in enumerate(self.features)}
        codes = np.array([self._xs_code[c] for c in self.categories])
        if "xs_category" in idx:
            xr[:, idx["xs_category"]] = codes[cats]
        if "xs_days_since" in idx:
            xr[:, idx["xs_days_since"]] = days[rows, cats]
        if "xs_spend_share" in idx:
            xr[:, idx["xs_spend_share"]] = share[rows, cats]
        out[rows, cats] = self._calibrate(m.booster.predict(xr, num_threads=_threads(len(rows))))
        return out


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
