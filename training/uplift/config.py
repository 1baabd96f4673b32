"""``experiments/uplift.yaml``: what ``cvm train uplift`` fits and how it chooses."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UpliftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(28, gt=0, description="Days after an assignment in which a conversion counts.")
    valid_share: float = Field(0.3, gt=0, lt=1, description=(
        "Share of the assignments, the latest by time, that validate (never a random split)."))
    learners: list[Literal["t", "x", "dr"]] = Field(["t", "x", "dr"], min_length=1, description=(
        "Meta-learners tried: T-learner, X-learner, DR-learner (all on LightGBM)."))
    modes: list[Literal["pooled", "per_offer"]] = Field(["pooled", "per_offer"], min_length=1, description=(
        "pooled: one model with the offer as an input; per_offer: one model per offer. Chosen by Qini."))
    min_group_rows: int = Field(50, gt=0, description=(
        "per_offer: an offer needs this many treated and this many control training rows for a model."))
    n_bags: int = Field(5, ge=2, description="Bootstrap bags behind each uplift's interval.")
    n_estimators: int = Field(200, gt=0, description="Trees per LightGBM model.")
    learning_rate: float = Field(0.05, gt=0, description="LightGBM learning rate.")
    num_leaves: int = Field(15, gt=1, description="LightGBM leaves per tree.")
    min_child_samples: int = Field(50, gt=0, description="LightGBM minimum rows per leaf.")
    seed: int = Field(7, description="Seed of every model, bag and the random baseline.")
    threads: int | None = Field(None, gt=0, description=(
        "LightGBM threads; default 1 below 50,000 training rows, else 2 (training.uplift.learners.threads_for)."))

    def lightgbm(self) -> dict:
        """LightGBM parameters of every model (threads only when set: else by data size)."""
        return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples,
                "verbose": -1, **({"n_jobs": self.threads} if self.threads else {})}
