"""LightGBM tuned with Optuna: TPE sampling, median pruning, trial and time budgets.

Each trial fits the scikit-learn API estimator on the training snapshots with early
stopping on the validation snapshot, reports the validation score as it goes (so a
hopeless trial is pruned early) and is handed to ``on_trial`` for logging.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import lightgbm as lgb
import numpy as np
import optuna

from training.config import TrainConfig

Kind = Literal["binary", "count", "value"]
#: LightGBM metric used for early stopping, pruning and selection, and its direction
METRIC: dict[str, tuple[str, str]] = {"binary": ("auc", "maximize"), "count": ("l1", "minimize"),
                                      "value": ("l1", "minimize")}
REPORT_EVERY = 10


@dataclass
class TuneResult:
    estimator: lgb.LGBMModel
    params: dict
    value: float
    best_iteration: int
    trials: int
    pruned: int
    seconds: float


def _estimator(kind: Kind, params: dict, cfg: TrainConfig) -> lgb.LGBMModel:
    common = dict(n_estimators=cfg.search.max_rounds, random_state=cfg.seed, n_jobs=2, deterministic=True,
                  force_row_wise=True, verbose=-1, bagging_freq=1, **params)
    if kind == "binary":
        return lgb.LGBMClassifier(objective="binary", **common)
    if kind == "count":
        return lgb.LGBMRegressor(objective="poisson", **common)
    return lgb.LGBMRegressor(**common)  # objective searched


def _sample(trial: optuna.Trial, kind: Kind, cfg: TrainConfig, nonnegative: bool = True) -> dict:
    s = cfg.search
    params = {
        "num_leaves": trial.suggest_int("num_leaves", *s.num_leaves, log=True),
        "learning_rate": trial.suggest_float("learning_rate", *s.learning_rate, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", *s.min_child_samples, log=True),
        "colsample_bytree": trial.suggest_float("feature_fraction", *s.feature_fraction),
        "subsample": trial.suggest_float("bagging_fraction", *s.bagging_fraction),
        "reg_lambda": trial.suggest_float("lambda_l2", *s.lambda_l2, log=True),
    }
    if kind == "value":
        # MAE is minimised by the median (L1) but the expected value is a mean (Tweedie):
        # let validation decide. Tweedie needs a non-negative target (not a correction term).
        choices = ["regression_l1", "tweedie", "huber"] if nonnegative else ["regression_l1", "huber", "regression"]
        params["objective"] = trial.suggest_categorical("objective", choices)
    return params


def _pruning_callback(trial: optuna.Trial, metric: str):
    def callback(env: lgb.callback.CallbackEnv) -> None:
        if env.iteration % REPORT_EVERY:
            return
        for data_name, name, value, _ in env.evaluation_result_list:
            if data_name == "valid_0" and name == metric:
                trial.report(value, env.iteration)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at iteration {env.iteration}")
    return callback


def fit(kind: Kind, params: dict, cfg: TrainConfig, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
        y_va: np.ndarray, callbacks: list | None = None) -> lgb.LGBMModel:
    metric, _ = METRIC[kind]
    est = _estimator(kind, params, cfg)
    est.fit(x_tr, y_tr, eval_set=[(x_va, y_va)], eval_metric=metric,
            callbacks=[lgb.early_stopping(cfg.search.early_stopping_rounds, first_metric_only=True, verbose=False),
                       *(callbacks or [])])
    return est


def best_score(est: lgb.LGBMModel, kind: Kind) -> float:
    metric, _ = METRIC[kind]
    return float(est.best_score_["valid_0"][metric])


def tune(kind: Kind, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, cfg: TrainConfig,
         on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> TuneResult:
    """Search ``cfg.budget.trials`` trials (or until the time budget); return the best fit."""
    metric, direction = METRIC[kind]
    nonnegative = bool((y_tr >= 0).all())
    best: dict = {}

    def objective(trial: optuna.Trial) -> float:
        params = _sample(trial, kind, cfg, nonnegative)
        est = fit(kind, params, cfg, x_tr, y_tr, x_va, y_va, [_pruning_callback(trial, metric)])
        value = best_score(est, kind)
        trial.set_user_attr("best_iteration", int(est.best_iteration_ or cfg.search.max_rounds))
        better = (not best or (value > best["value"] if direction == "maximize" else value < best["value"]))
        if better:
            best.update(value=value, estimator=est, params=params)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2 * REPORT_EVERY),
    )
    t0 = time.perf_counter()
    callbacks = [lambda s, t: on_trial(t)] if on_trial else None
    study.optimize(objective, n_trials=cfg.budget.trials, timeout=cfg.budget.timeout_seconds, callbacks=callbacks)
    if not best:
        raise RuntimeError("every trial was pruned or failed: widen the search space or the budget")
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    est = best["estimator"]
    return TuneResult(est, best["params"], best["value"], int(est.best_iteration_ or 0), len(study.trials), pruned,
                      time.perf_counter() - t0)
