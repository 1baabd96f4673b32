"""Snapshot columns to a model matrix: a fixed column order, strings as codes.

Categories are encoded here (sorted vocabulary learnt at fit, unknown -> NaN) rather
than with pandas ``category`` dtypes, which MLflow schema enforcement rejects and
LightGBM can map differently between fit and predict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class FeatureEncoder:
    """scikit-learn style: ``fit`` learns string vocabularies, ``transform`` gives float32."""

    def __init__(self, columns: Sequence[str]):
        self.columns = list(columns)

    def fit(self, frame: pd.DataFrame) -> FeatureEncoder:
        self._check(frame)
        self.vocab_: dict[str, dict[str, int]] = {}
        for col in self.columns:
            s = frame[col]
            if not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                values = sorted(str(v) for v in s.dropna().unique())
                self.vocab_[col] = {v: i for i, v in enumerate(values)}
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        self._check(frame)
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for j, col in enumerate(self.columns):
            s = frame[col]
            if col in self.vocab_:
                out[:, j] = s.map(self.vocab_[col]).astype("float64").to_numpy(na_value=np.nan)
            else:
                out[:, j] = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
        return out

    def _check(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise KeyError(f"input lacks the model's feature column(s): {', '.join(missing)}")
