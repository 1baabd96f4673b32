"""The model a task ships: feature snapshot rows in, scores out.

``TaskModel`` holds everything prediction needs (input columns, the encoder, optional
BG/NBD inputs, LightGBM boosters, the calibrator). Every score it gives goes through its
``predictor()`` (``training.predictor``), the one prediction path the training
evaluation, the MLflow pyfunc, the service and the batch share. ``design`` and ``matrix``
are the training side: the pandas frames a model is fitted on. ``PyfuncModel`` wraps it
for MLflow; its ``predict`` returns probabilities (never class labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import mlflow.pyfunc
import numpy as np
import pandas as pd

from features.definitions import slug
from training.predictor import CROSS_SELL_CONTEXT, Predictor, block_from_frame


def cross_sell_context(frame: pd.DataFrame, categories: Sequence[str]) -> pd.DataFrame:
    """Add the row's own category's recency and spend share to (customer, category) rows."""
    out = frame.copy()
    out["xs_category"] = out["category"].astype("str")
    days = np.full(len(out), np.nan)
    share = np.full(len(out), np.nan)
    cat = out["category"].to_numpy()
    for c in categories:
        hit = cat == c
        days[hit] = out.loc[hit, f"days_since_{slug(c)}"].astype("float64").to_numpy()
        share[hit] = out.loc[hit, f"spend_share_{slug(c)}"].astype("float64").to_numpy()
    out["xs_days_since"] = days
    out["xs_spend_share"] = share
    return out


@dataclass
class Calibrator:
    """Isotonic or Platt scaling of raw probabilities, fitted on the validation snapshot."""

    method: str = "isotonic"
    model_: object | None = None

    def fit(self, p: np.ndarray, y: np.ndarray) -> Calibrator:
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            self.model_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        elif self.method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
            self.model_ = LogisticRegression(C=1e6).fit(logit.reshape(-1, 1), y)
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            return p
        if self.method == "isotonic":
            return self.model_.predict(p)
        logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
        return self.model_.predict_proba(logit.reshape(-1, 1))[:, 1]


@dataclass
class TaskModel:
    """A trained task: ``predict(snapshot rows) -> DataFrame`` of the task's outputs."""

    task: str
    horizon_days: int
    features: list[str]  # model inputs, in matrix order (snapshot columns and derived ones)
    encoder: object  # training.encode.FeatureEncoder
    booster: object  # lightgbm.Booster: probability (classification) or value (clv)
    calibrator: Calibrator | None = None
    count_booster: object | None = None  # next-purchase: expected orders (Poisson)
    bgnbd: object | None = None  # training.bgnbd.BGNBD, adds bgnbd_* inputs
    categories: list[str] = field(default_factory=list)  # cross-sell
    lookback_days: int = 91  # cross-sell population
    per_category: dict[str, object] = field(default_factory=dict)  # cross-sell per-category boosters
    residual_of_bgnbd: bool = False  # clv: booster predicts spend - BG/NBD expected spend
    feature_set_fingerprint: str = ""
    trained_as_of: str = ""

    # ------------------------------------------------------------------ inputs
    def snapshot_columns(self) -> list[str]:
        """Snapshot columns the model reads (what a caller must pass)."""
        derived = set(CROSS_SELL_CONTEXT) | {c for c in self.features if c.startswith("bgnbd_")}
        cols = [c for c in self.features if c not in derived]
        if self.bgnbd is not None:
            cols += [c for c in self.bgnbd.input_columns if c not in cols]
        if self.task == "cross-sell":
            for c in self.categories:
                for col in (f"days_since_{slug(c)}", f"spend_share_{slug(c)}"):
                    if col not in cols:
                        cols.append(col)
        return cols

    def design(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Snapshot (or training) rows with the derived inputs added."""
        if self.bgnbd is not None:
            extra = self.bgnbd.transform(frame, self.horizon_days)
            frame = pd.concat([frame.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
        if self.task == "cross-sell" and "category" in frame.columns:
            frame = cross_sell_context(frame, self.categories)
        return frame

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return self.encoder.transform(self.design(frame))

    # ----------------------------------------------------------------- outputs
    def predictor(self) -> Predictor:
        """The fast form, built on first use and kept (a finished model never changes)."""
        cached = self.__dict__.get("_predictor")
        if cached is None:
            cached = self.__dict__["_predictor"] = Predictor(self)
        return cached

    def __setattr__(self, name: str, value: object) -> None:
        self.__dict__.pop("_predictor", None)  # a part changed: the fast form is rebuilt
        object.__setattr__(self, name, value)

    def with_parts(self, **parts: object) -> TaskModel:
        """A copy with some parts replaced (the training pipeline assembles a model in steps)."""
        return replace(self, **parts)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_predictor", None)  # rebuilt on load: never pickled into MLflow
        return state

    def _rows(self, frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        p = self.predictor()
        block = block_from_frame(frame, [c for c in p.columns if c in frame.columns])
        categories = frame["category"].astype(object).to_numpy() if self.task == "cross-sell" else None
        return block, categories

    def score_rows(self, frame: pd.DataFrame, *, calibrated: bool = True) -> np.ndarray:
        """The main score of each row (probability, or value for clv); cross-sell rows are
        (customer, category) pairs with a ``category`` column."""
        block, categories = self._rows(frame)
        return self.predictor().row_scores(block, len(frame), categories, calibrated=calibrated)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-row feature contributions to the main score (LightGBM TreeSHAP, raw scale)."""
        block, categories = self._rows(frame)
        contrib, _ = self.predictor().row_contributions(block, len(frame), categories)
        return pd.DataFrame(contrib, columns=self.features)

    def inputs(self, frame: pd.DataFrame) -> np.ndarray:
        """The float32 matrix the predictor scores these rows on (what contributions are of)."""
        block, categories = self._rows(frame)
        return self.predictor().row_inputs(block, len(frame), categories)[0]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Scores for snapshot rows (one per customer), keyed by ``customer_id``."""
        if self.task == "cross-sell" and frame["customer_id"].duplicated().any():
            raise ValueError("cross-sell scores one snapshot row per customer; customer_id has duplicates")
        p = self.predictor()
        missing = [c for c in p.columns if c not in frame.columns]
        if missing:
            raise KeyError(f"input lacks the model's feature column(s): {', '.join(missing)}")
        n = len(frame)
        block = block_from_frame(frame, p.columns)
        out = pd.DataFrame({"customer_id": frame["customer_id"].to_numpy()})
        if self.task == "cross-sell":
            wide = p.cross_sell(block, n)
            for k, c in enumerate(self.categories):
                out[f"cross_sell_{slug(c)}"] = wide[:, k]
            return out
        for key, values in p.score(block, n).values.items():
            out[key] = values
        return out

    def clv_offset(self, frame: pd.DataFrame) -> np.ndarray:
        """clv boosts from BG/NBD + Gamma-Gamma: the trees learn the correction to the
        textbook expected spend (0 when the model was trained without it). Training's
        view: the frame's rows must all be valid BG/NBD inputs."""
        if not self.residual_of_bgnbd:
            return np.zeros(len(frame))
        return self.bgnbd.transform(frame, self.horizon_days)["bgnbd_expected_spend"].to_numpy()


class PyfuncModel(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: ``predict`` returns the task's scores as a DataFrame."""

    def __init__(self, model: TaskModel):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.predict(model_input)
