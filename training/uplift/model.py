"""The trained uplift model: features + offer in, uplift (and its interval) out.

One ``predict`` path used by the training evaluation, the registered MLflow pyfunc, the
batch and the service. Two shapes, chosen at training by measurement (``pipeline``):

* ``pooled``: one meta-learner with the offer as an input column (offers share strength:
  an offer with few randomised contacts borrows from the others);
* ``per_offer``: one meta-learner per offer (no assumption that offers act alike); an
  offer with too few assignments to fit gets no model and an uplift of NaN (unknown),
  never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import mlflow.pyfunc
import numpy as np
import pandas as pd

from training.encode import FeatureEncoder

Mode = Literal["pooled", "per_offer"]
#: the offer column of a pooled model's input
OFFER_COLUMN = "offer_id"


@dataclass
class UpliftModel:
    """A fitted uplift model (``learner`` names the meta-learner: t, x or dr)."""

    learner: str
    mode: Mode
    features: list[str]
    encoder: FeatureEncoder
    offers: list[str]
    models: dict[str, object] = field(default_factory=dict)  # "*" (pooled) or offer id -> fitted learner
    horizon_days: int = 28
    trained_as_of: str = ""

    def design(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The learner's input: encoded features (and, pooled, the offer as a code)."""
        x = pd.DataFrame(self.encoder.transform(frame), columns=self.features, index=frame.index)
        if self.mode == "pooled":
            codes = {o: i for i, o in enumerate(self.offers)}
            x[OFFER_COLUMN] = pd.Categorical(frame[OFFER_COLUMN].map(codes), categories=range(len(self.offers)))
        return x

    def _each(self, frame: pd.DataFrame, fn, outputs: int) -> tuple[np.ndarray, ...]:
        """``fn(learner, design rows)`` -> ``outputs`` arrays, per model; NaN for rows of an
        offer without a model (per_offer)."""
        if OFFER_COLUMN not in frame.columns:
            raise KeyError(f"uplift input lacks the {OFFER_COLUMN!r} column (which offer to score)")
        x = self.design(frame)
        if self.mode == "pooled":
            return fn(self.models["*"], x)
        outs = [np.full(len(frame), np.nan) for _ in range(outputs)]
        offer = frame[OFFER_COLUMN].astype(str).to_numpy()
        for o, model in self.models.items():
            rows = np.flatnonzero(offer == o)
            if len(rows):
                for out, got in zip(outs, fn(model, x.iloc[rows]), strict=True):
                    out[rows] = got
        return tuple(outs)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Uplift P(convert | contacted with the row's offer) - P(convert | not contacted)."""
        return self._each(frame, lambda m, x: (m.predict(x),), 1)[0]

    def predict_interval(self, frame: pd.DataFrame, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """The ``1 - alpha`` interval of each row's uplift (from the learner's bootstrap bags)."""
        low, high = self._each(frame, lambda m, x: m.predict_interval(x, alpha=alpha), 2)
        return low, high

    def scores(self, frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
        """``uplift``, ``uplift_low``, ``uplift_high`` per row (what the pyfunc returns)."""
        low, high = self.predict_interval(frame, alpha)
        return pd.DataFrame({"uplift": self.predict(frame), "uplift_low": low, "uplift_high": high},
                            index=frame.index)

    @property
    def inputs(self) -> Sequence[str]:
        return [*self.features, OFFER_COLUMN]


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """The registered model (``cvm-uplift``): a frame of features + ``offer_id`` in,
    ``uplift``, ``uplift_low``, ``uplift_high`` out."""

    def __init__(self, model: UpliftModel):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.scores(model_input)
