"""Uplift of every (customer, offer): the cvm-uplift champion over a block of snapshot rows.

``UpliftScorer`` is built once from a trained ``training.uplift.UpliftModel`` and scores a
``Block`` (column -> array) on the learners' boosters over float32 matrices, without
pandas: the service (one customer, a few offers), the nightly batch and the simulation
(millions) share it. The result is what ``scoring.nbo.CustomerScores.uplift`` holds: offer
id -> (uplift, low, high), the estimate and its 95 % interval. An offer the model has no
learner for (per-offer mode, too few randomised contacts) is left out, and arbitration
then says "no uplift model for this offer" for offers that need one.

``tests/test_uplift_scores.py`` checks it against ``UpliftModel.scores`` (the pandas path
the MLflow pyfunc and the training evaluation use) within 1e-9.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.predictor import Block, encode_column
from training.uplift.model import UpliftModel

#: offer id -> (uplift, low, high), arrays of one entry per customer
UpliftScores = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


class UpliftScorer:
    """A trained uplift model ready for numpy inference (thread-safe: LightGBM predict is)."""

    def __init__(self, model: UpliftModel, alpha: float = 0.05):
        self.model = model
        self.alpha = alpha
        self.columns = list(model.features)  # the snapshot columns it reads
        self._vocab: dict[str, dict[str, int]] = dict(getattr(model.encoder, "vocab_", {}))
        self.string_columns = set(self._vocab)
        self._cache: dict[str, pd.Index] = {}
        self._code = {o: float(i) for i, o in enumerate(model.offers)}
        #: offers with an uplift estimate
        self.offers = list(model.offers) if model.mode == "pooled" else [o for o in model.offers if o in model.models]

    def matrix(self, block: Block, n: int) -> np.ndarray:
        """The customers' features as the learners' float32 input (the offer column not included)."""
        x = np.empty((n, len(self.columns)), dtype=np.float32)
        for j, name in enumerate(self.columns):
            if name not in block:
                raise KeyError(f"uplift input lacks the model's feature column {name!r}")
            x[:, j] = encode_column(block[name], self._vocab.get(name), self._cache, name)
        return x

    def score(self, block: Block, n: int, offer_ids: Sequence[str] | None = None) -> UpliftScores:
        """Uplift, low and high for every customer of the block and every offer of
        ``offer_ids`` (default: every offer the model knows) that has an estimate."""
        wanted = [o for o in (self.offers if offer_ids is None else offer_ids) if o in self.offers]
        if n == 0:
            return {o: (np.empty(0), np.empty(0), np.empty(0)) for o in wanted}
        if not wanted:
            return {}
        x = self.matrix(block, n)
        out: UpliftScores = {}
        if self.model.mode == "pooled":
            m = len(wanted)  # one matrix of n x m rows: one booster call per learner piece for all offers
            big = np.empty((n * m, x.shape[1] + 1), dtype=np.float32)
            big[:, :-1] = np.tile(x, (m, 1))
            big[:, -1] = np.repeat([self._code[o] for o in wanted], n)
            est, low, high = self.model.models["*"].predict_matrix(big, self.alpha)
            for k, o in enumerate(wanted):
                rows = slice(k * n, (k + 1) * n)
                out[o] = (est[rows], low[rows], high[rows])
            return out
        for o in wanted:
            out[o] = self.model.models[o].predict_matrix(x, self.alpha)
        return out


@dataclass(frozen=True)
class UpliftChampion:
    """The cvm-uplift version that scores."""

    name: str
    version: str
    scorer: UpliftScorer
    source: str

    @property
    def columns(self) -> list[str]:
        return self.scorer.columns


def uplift_for(champion: UpliftChampion | None, block: Block, n: int,
               offer_ids: Sequence[str]) -> UpliftScores:
    """``CustomerScores.uplift`` for the catalog's offers (empty without a champion)."""
    if champion is None:
        return {}
    return champion.scorer.score(block, n, offer_ids)


def missing_columns(champion: UpliftChampion, available: Mapping[str, object] | Sequence[str]) -> list[str]:
    """The champion's feature columns a snapshot lacks."""
    return [c for c in champion.columns if c not in available]
