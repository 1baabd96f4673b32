"""Model cards: what the registry and the training run say about each champion.

Read with an explicit ``MlflowClient`` (never MLflow's process-wide URIs): the version the
``champion`` alias points at, its run's parameters (training as_of, dataset, data
fingerprint), the test metrics of the model and of every baseline
(``evaluation/evaluation.csv``), the feature importance and, for runs that logged it, the
test set's outcomes and scores (``evaluation/test_predictions.parquet``) from which the
calibration and cumulative-gains curves are drawn.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from training.metrics import calibration_bins
from training.plots import gains_curve
from training.tasks import TASK_SPECS, TASKS


@dataclass
class ModelCard:
    task: str
    name: str
    version: str
    run_id: str
    params: dict
    evaluation: pd.DataFrame  # model + baselines x metrics (test snapshot)
    importance: pd.DataFrame  # feature, gain (descending)
    predictions: pd.DataFrame | None = None  # y, lightgbm, raw, baseline:<name>
    notes: list[str] = field(default_factory=list)

    @property
    def is_probability(self) -> bool:
        return TASK_SPECS[self.task].is_probability

    def calibration(self, n_bins: int = 10) -> pd.DataFrame | None:
        """Mean predicted probability vs observed rate per bin, raw and calibrated."""
        if self.predictions is None or not self.is_probability:
            return None
        rows = []
        for column in ("raw", "lightgbm"):
            if column not in self.predictions:
                continue
            count, mean_p, rate = calibration_bins(self.predictions["y"].to_numpy(),
                                                   np.clip(self.predictions[column].to_numpy(), 0, 1), n_bins)
            for c, m, r in zip(count, mean_p, rate):
                if c > 0:
                    rows.append({"model": "calibrated" if column == "lightgbm" else "raw", "mean_predicted": m,
                                 "observed": r, "rows": int(c)})
        return pd.DataFrame(rows)

    def gains(self, points: int = 101) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Cumulative gains of the model and each baseline, sampled at ``points`` shares."""
        if self.predictions is None:
            return {}
        y = self.predictions["y"].to_numpy()
        grid = np.linspace(0, 1, points)
        out = {}
        for column in self.predictions.columns:
            if column in ("y", "raw"):
                continue
            x, g = gains_curve(y, self.predictions[column].to_numpy())
            out[column] = (grid, np.interp(grid, x, g))
        return out


def load_cards(tracking_uri: str) -> dict[str, ModelCard]:
    """A card for every task with a champion (tasks without one are left out)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    cards = {}
    for task in TASKS:
        name = TASK_SPECS[task].model_name
        try:
            mv = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            continue
        run = client.get_run(mv.run_id)
        cards[task] = _card(client, task, name, str(mv.version), mv.run_id, dict(run.data.params))
    return cards


def _card(client, task: str, name: str, version: str, run_id: str, params: dict) -> ModelCard:
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        def fetch(path: str) -> Path | None:
            try:
                return Path(client.download_artifacts(run_id, path, tmp))
            except Exception:  # noqa: BLE001 - an artifact a run did not log
                return None

        ev = fetch("evaluation/evaluation.csv")
        imp = fetch("evaluation/feature_importance.csv")
        pr = fetch("evaluation/test_predictions.parquet")
        evaluation = pd.read_csv(ev) if ev else pd.DataFrame()
        importance = pd.read_csv(imp) if imp else pd.DataFrame(columns=["feature", "gain"])
        predictions = pd.read_parquet(pr) if pr else None
    if predictions is None:
        notes.append("this run did not log its test predictions (trained before they were logged): retrain to "
                     "draw the calibration and gains curves")
    return ModelCard(task, name, version, run_id, params, evaluation, importance, predictions, notes)
