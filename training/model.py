"""The model a task ships: feature snapshot rows in, scores out.

``TaskModel`` holds everything prediction needs (input columns, the encoder, optional
BG/NBD inputs, LightGBM boosters, the calibrator) so that training, the batch job and the
service all call the same ``predict``. ``PyfuncModel`` wraps it for MLflow; its
``predict`` returns probabilities (never class labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mlflow.pyfunc
import numpy as np
import pandas as pd

from features.definitions import slug

#: columns a cross-sell row adds to the customer's features
CROSS_SELL_CONTEXT = ("xs_category", "xs_days_since", "xs_spend_share")


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


def expand_categories(customers: pd.DataFrame, categories: Sequence[str], lookback_days: int) -> pd.DataFrame:
    """One row per (customer, category) the customer has not bought in the lookback days:
    the cross-sell population, as the labels define it."""
    n, k = len(customers), len(categories)
    rows = customers.loc[customers.index.repeat(k)].reset_index(drop=True)
    rows["category"] = np.tile(np.asarray(categories, dtype=object), n)
    days = np.column_stack([customers[f"days_since_{slug(c)}"].astype("float64").to_numpy() for c in categories]
                           ).reshape(-1) if k else np.empty(0)
    keep = np.isnan(days) | (days > lookback_days)
    return rows[keep].reset_index(drop=True)


@dataclass
class Calibrator:
    """Isotonic or Platt scaling of raw probabilities, fitted on the validation snapshot."""

    method: str = "isotonic"
    model_: object | None = None

    def fit(self, p: np.ndarray, y: np.ndarray) -> "Calibrator":
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
    def _probability(self, booster, x: np.ndarray) -> np.ndarray:
        p = booster.predict(x)
        return self.calibrator.transform(p) if self.calibrator is not None else p

    def score_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """The main score of each row (probability, or value for clv)."""
        x = self.matrix(frame)
        if self.task == "clv":
            return np.clip(self.booster.predict(x) + self.clv_offset(frame), 0.0, None)
        if self.task == "cross-sell" and self.per_category:
            out = np.full(len(frame), np.nan)
            cats = frame["category"].to_numpy()
            for c, booster in self.per_category.items():
                hit = cats == c
                if hit.any():
                    out[hit] = self._probability(booster, x[hit])
            return out
        return self._probability(self.booster, x)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Scores for snapshot rows (one per customer), keyed by ``customer_id``."""
        if self.task == "cross-sell" and frame["customer_id"].duplicated().any():
            raise ValueError("cross-sell scores one snapshot row per customer; customer_id has duplicates")
        ids = frame["customer_id"].to_numpy()
        if self.task == "cross-sell":
            rows = expand_categories(frame.reset_index(drop=True), self.categories, self.lookback_days)
            p = self.score_rows(rows) if len(rows) else np.empty(0)
            wide = pd.DataFrame({"customer_id": rows["customer_id"], "category": rows["category"], "p": p})
            wide = wide.pivot(index="customer_id", columns="category", values="p")
            out = pd.DataFrame({"customer_id": ids})
            for c in self.categories:
                col = wide[c] if c in wide.columns else pd.Series(dtype="float64")
                out[f"cross_sell_{slug(c)}"] = out["customer_id"].map(col).astype("float64")
            return out
        if self.task == "churn":
            return pd.DataFrame({"customer_id": ids, "churn_probability": self.score_rows(frame)})
        if self.task == "next-purchase":
            x = self.matrix(frame)
            return pd.DataFrame({"customer_id": ids,
                                 "next_purchase_probability": self._probability(self.booster, x),
                                 "expected_orders": np.clip(self.count_booster.predict(x), 0.0, None)})
        return pd.DataFrame({"customer_id": ids, "clv": self.score_rows(frame)})

    def clv_offset(self, frame: pd.DataFrame) -> np.ndarray:
        """clv boosts from BG/NBD + Gamma-Gamma: the trees learn the correction to the
        textbook expected spend (0 when the model was trained without it)."""
        if not self.residual_of_bgnbd:
            return np.zeros(len(frame))
        return self.bgnbd.transform(frame, self.horizon_days)["bgnbd_expected_spend"].to_numpy()

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-row feature contributions to the main score (LightGBM TreeSHAP, raw scale)."""
        contrib = self.booster.predict(self.matrix(frame), pred_contrib=True)
        return pd.DataFrame(contrib[:, :-1], columns=self.features)


class PyfuncModel(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: ``predict`` returns the task's scores as a DataFrame."""

    def __init__(self, model: TaskModel):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ARG002
        return self.model.predict(model_input)
