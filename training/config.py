"""Declarative training configuration: one YAML per task under ``experiments/``.

Label windows, rolling origins, the features a model may use, the search space and the
budgets are all configuration; ``cvm train`` logs the whole file with the run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelConfig(Strict):
    horizon_days: int | None = Field(
        None, gt=0, description="Label window [as_of, as_of + H). Default per task: churn 28, "
        "next-purchase 14, cross-sell 28, clv the longest the data allows (<= max_clv_horizon_days).")
    activity_window_days: int = Field(
        365, gt=0, description="churn: the population is customers with an order in these days before as_of.")
    cross_sell_lookback_days: int = Field(
        91, gt=0, description="cross-sell: a customer is a candidate for category c when they have not "
        "bought c in these days before as_of.")
    max_clv_horizon_days: int = Field(365, gt=0, description="Upper bound of the clv horizon.")


class OriginConfig(Strict):
    """Rolling origins: snapshots whose label windows all end before the training as_of."""

    step_days: int = Field(28, gt=0, description="Days between consecutive training origins.")
    min_history_days: int = Field(
        60, ge=0, description="An origin needs this much data before it (features need history).")
    max_train_origins: int = Field(8, gt=0, description="At most this many training snapshots, latest first.")


class FeatureSelection(Strict):
    exclude: list[str] = Field(default_factory=list, description="Feature names (or `group:<name>`) left out.")
    include_only: list[str] | None = Field(None, description="If set, only these features (or groups).")
    bgnbd: bool = Field(True, description="Add BG/NBD P(alive) and expected purchases as inputs.")


class SearchSpace(Strict):
    num_leaves: tuple[int, int] = Field((15, 127), description="Range searched (log scale).")
    learning_rate: tuple[float, float] = Field((0.01, 0.2), description="Range searched (log scale).")
    min_child_samples: tuple[int, int] = Field((10, 200), description="Range searched (log scale).")
    feature_fraction: tuple[float, float] = Field((0.5, 1.0), description="Range searched.")
    bagging_fraction: tuple[float, float] = Field((0.5, 1.0), description="Range searched.")
    lambda_l2: tuple[float, float] = Field((1e-3, 10.0), description="Range searched (log scale).")
    max_rounds: int = Field(2000, gt=0, description="Boosting rounds before early stopping.")
    early_stopping_rounds: int = Field(50, gt=0, description="Stop after this many rounds without progress.")


class Budget(Strict):
    trials: int = Field(30, gt=0, description="Optuna trials.")
    timeout_seconds: float = Field(150.0, gt=0, description="Wall-clock budget of the search.")


class TrainConfig(Strict):
    labels: LabelConfig = Field(default_factory=LabelConfig, description="Label definitions.")
    origins: OriginConfig = Field(default_factory=OriginConfig, description="Rolling origins.")
    features: FeatureSelection = Field(default_factory=FeatureSelection, description="Model inputs.")
    search: SearchSpace = Field(default_factory=SearchSpace, description="Optuna search space.")
    budget: Budget = Field(default_factory=Budget, description="Trial and time budgets.")
    cross_sell_mode: Literal["pooled", "per_category"] = Field(
        "pooled", description="One model over (customer, category) rows, or one model per category.")
    calibration: Literal["isotonic", "sigmoid", "none"] = Field(
        "isotonic", description="Probability calibration fitted on the validation snapshot.")
    seed: int = Field(7, description="Seed of the sampler, LightGBM and every shuffle.")

    @model_validator(mode="after")
    def _ranges(self) -> TrainConfig:
        for name, value in self.search:
            if isinstance(value, tuple) and value[0] > value[1]:
                raise ValueError(f"search.{name}: lower bound {value[0]} above upper bound {value[1]}")
        return self
