"""The one prediction path: a trained ``TaskModel``'s fast form, column arrays in, scores out.

``Predictor`` is built once from a trained model (``TaskModel.predictor()``): column
order, string vocabularies, the calibration curve, BG/NBD parameters, and the boosters
(one pooled model, or one per category for cross-sell). It scores a ``Block`` (column
name -> 1-D numpy array, one entry per row) straight on the LightGBM boosters over
float32 matrices, in as large a chunk as the caller passes. The MLflow pyfunc
(``TaskModel.predict``), the training evaluation, the service and the nightly batch all
score through it, so they cannot disagree.

Invalid inputs are treated one way everywhere: a row the BG/NBD inputs do not describe
(missing, negative, last purchase before the first) gets NaN BG/NBD inputs, which LightGBM
routes like any missing value, instead of an error for the whole call. A string the
model never saw, or a missing value, is NaN too.

Training builds its matrices with ``FeatureEncoder`` over pandas frames (the fit path);
``tests/test_inference.py`` checks that both give the same matrix and the same scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.definitions import slug
from training.bgnbd import bgnbd_predictions, gamma_gamma_value
from training.tasks import TASK_SPECS

if TYPE_CHECKING:
    from training.model import TaskModel

#: one row per entry: snapshot column -> values (float64 for numbers, object for strings)
Block = Mapping[str, np.ndarray]

#: columns a cross-sell row adds to the customer's features
CROSS_SELL_CONTEXT = ("xs_category", "xs_days_since", "xs_spend_share")

#: below this many rows LightGBM predicts on the calling thread: a few rows gain nothing from
#: OpenMP, and concurrent requests each starting a team of spinning threads on 2 cores
#: stall one another
SINGLE_THREAD_ROWS = 64


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


def encode_column(values: np.ndarray, vocab: Mapping[str, int] | None, cache: dict[str, pd.Index],
                  name: str) -> np.ndarray:
    """A block column as model input: numbers as float64; strings (``vocab`` given, as
    ``training.encode.FeatureEncoder`` learnt it) as their codes, NaN for unknown or missing.
    ``cache`` keeps each column's vocabulary index between calls."""
    if vocab is None:
        return np.asarray(values, dtype="float64")
    if len(values) < 16:
        return np.fromiter((vocab.get(v, np.nan) if isinstance(v, str) else np.nan for v in values),
                           dtype="float64", count=len(values))
    index = cache.get(name)
    if index is None:  # built once per column: codes are the vocabulary's positions
        index = cache[name] = pd.Index(sorted(vocab, key=vocab.__getitem__))
    codes = index.get_indexer(pd.Index(values, dtype=object)).astype("float64")
    codes[codes < 0] = np.nan  # unknown or missing
    return codes


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


class Predictor:
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
        self._xs_code = np.array([float(self._vocab.get("xs_category", {}).get(c, np.nan)) for c in self.categories])
        self._index = {name: j for j, name in enumerate(self.features)}
        #: cross-sell per category: position in ``categories`` -> that category's booster
        self._per_category = {self.categories.index(c): b for c, b in model.per_category.items()
                              if c in self.categories}

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
        return encode_column(values, self._vocab.get(name), self._vocab_index, name)

    def matrix(self, block: Block, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The model's float32 input matrix (rows = customers) and the BG/NBD columns; the
        cross-sell context columns are NaN (``pairs`` fills them)."""
        derived = self._bgnbd(block) if self.model.bgnbd is not None else {}
        x = np.empty((n, len(self.features)), dtype=np.float32)
        for j, name in enumerate(self.features):
            if name in derived:
                x[:, j] = derived[name]
            elif name in CROSS_SELL_CONTEXT:
                x[:, j] = np.nan
            elif name in block:
                x[:, j] = self._column(name, block[name])
            else:
                raise KeyError(f"input lacks the model's feature column {name!r}")
        return x, derived

    def pairs(self, x: np.ndarray, block: Block, rows: np.ndarray, cats: np.ndarray) -> np.ndarray:
        """Cross-sell (customer, category) rows: the customers' matrix rows ``rows`` with the
        context of category ``cats`` (positions in ``categories``) filled in."""
        xr = x[rows]
        if "xs_category" in self._index:
            xr[:, self._index["xs_category"]] = self._xs_code[cats]
        for name, prefix in (("xs_days_since", "days_since_"), ("xs_spend_share", "spend_share_")):
            if name not in self._index:
                continue
            wide = np.column_stack([np.asarray(block[f"{prefix}{slug(c)}"], dtype="float64")
                                    for c in self.categories]) if self.categories else np.empty((len(x), 0))
            xr[:, self._index[name]] = wide[rows, cats]
        return xr

    # ----------------------------------------------------------------- outputs
    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        if self._cal_kind == "isotonic":
            xs, ys = self._cal
            return np.interp(p, xs, ys)
        if self._cal_kind == "sigmoid":
            a, b = self._cal
            logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
            return 1.0 / (1.0 + np.exp(-(a * logit + b)))
        return p

    def _raw(self, x: np.ndarray, cats: np.ndarray | None = None) -> np.ndarray:
        """The main booster's raw output per row; per-category cross-sell dispatches each
        row to its category's booster (NaN for a category without one)."""
        if self._per_category and cats is not None:
            out = np.full(len(x), np.nan)
            for k, booster in self._per_category.items():
                hit = cats == k
                if hit.any():
                    out[hit] = booster.predict(x[hit], num_threads=_threads(int(hit.sum())))
            return out
        return self.model.booster.predict(x, num_threads=_threads(len(x)))

    def _contributions(self, x: np.ndarray, cats: np.ndarray | None = None) -> np.ndarray:
        if self._per_category and cats is not None:
            out = np.zeros((len(x), len(self.features)))
            for k, booster in self._per_category.items():
                hit = cats == k
                if hit.any():
                    out[hit] = booster.predict(x[hit], pred_contrib=True, num_threads=_threads(int(hit.sum())))[:, :-1]
            return out
        return self.model.booster.predict(x, pred_contrib=True, num_threads=_threads(len(x)))[:, :-1]

    def score(self, block: Block, n: int, *, reasons: bool = False) -> Scored:
        """Outputs for ``n`` customers (not cross-sell: see ``cross_sell``)."""
        if self.task == "cross-sell":
            raise ValueError("use cross_sell() for the cross-sell model")
        x, derived = self.matrix(block, n)
        m = self.model
        threads = _threads(n)
        if n == 0:
            return Scored({k: np.empty(0) for k in TASK_SPECS[self.task].outputs})
        contrib = self._contributions(x) if reasons else None
        if self.task == "clv":
            return Scored({"clv": self._value(x, derived)}, contrib, x)
        p = self._calibrate(self._raw(x))
        if self.task == "churn":
            return Scored({"churn_probability": p}, contrib, x)
        orders = np.clip(m.count_booster.predict(x, num_threads=threads), 0.0, None)
        return Scored({"next_purchase_probability": p, "expected_orders": orders}, contrib, x)

    def _value(self, x: np.ndarray, derived: Mapping[str, np.ndarray]) -> np.ndarray:
        offset = derived["bgnbd_expected_spend"] if self.model.residual_of_bgnbd else 0.0
        return np.clip(self._raw(x) + np.nan_to_num(offset), 0.0, None)

    def cross_sell(self, block: Block, n: int) -> np.ndarray:
        """Customers x categories probabilities; NaN where the customer is outside the
        cross-sell population (bought the category within the lookback days)."""
        k = len(self.categories)
        out = np.full((n, k), np.nan)
        if n == 0 or k == 0:
            return out
        x, _ = self.matrix(block, n)
        days = np.column_stack([np.asarray(block[f"days_since_{slug(c)}"], dtype="float64") for c in self.categories])
        eligible = np.isnan(days) | (days > self.model.lookback_days)
        rows, cats = np.nonzero(eligible)
        if len(rows) == 0:
            return out
        out[rows, cats] = self._calibrate(self._raw(self.pairs(x, block, rows, cats), cats))
        return out

    # --------------------------------------------------- rows (training's view)
    def category_positions(self, categories: np.ndarray) -> np.ndarray:
        """Position of each row's category in ``categories`` (-1: a category the model lacks)."""
        index = pd.Index(self.categories, dtype=object)
        return index.get_indexer(pd.Index(np.asarray(categories, dtype=object)))

    def row_inputs(self, block: Block, n: int, categories: np.ndarray | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        """The matrix of ``n`` rows as training sees them: one row per customer, or for
        cross-sell one per (customer, category) with the row's ``categories``."""
        x, derived = self.matrix(block, n)
        if self.task != "cross-sell":
            return x, derived, None
        if categories is None:
            raise ValueError("cross-sell rows need their category")
        cats = self.category_positions(categories)
        known = cats >= 0
        rows = np.arange(n)
        xr = x.copy()
        xr[known] = self.pairs(x, block, rows[known], cats[known])
        if "xs_category" in self._index:
            xr[~known, self._index["xs_category"]] = np.nan
        return xr, derived, cats

    def row_scores(self, block: Block, n: int, categories: np.ndarray | None = None, *,
                   calibrated: bool = True) -> np.ndarray:
        """The main score of each row (probability, or value for clv): what the test
        metrics and the champion/challenger gate judge."""
        if n == 0:
            return np.empty(0)
        x, derived, cats = self.row_inputs(block, n, categories)
        if self.task == "clv":
            return self._value(x, derived)
        raw = self._raw(x, cats)
        if cats is not None:
            raw = np.where(cats >= 0, raw, np.nan)
        return self._calibrate(raw) if calibrated else raw

    def row_contributions(self, block: Block, n: int, categories: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """TreeSHAP contributions of each row's main score (raw scale) and the matrix they are of."""
        x, _, cats = self.row_inputs(block, n, categories)
        return self._contributions(x, cats), x
