"""The dataset-level sections of an experiment YAML: what building a snapshot needs.

``experiments/<dataset>.yaml`` holds them (features, validation, identity resolution);
``training.experiment.ProjectConfig`` adds the ``train`` section of one task on top.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from features.config import FeatureConfig
from profiles.config import ResolutionConfig
from sources.validate import ValidationConfig


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="Dataset directory or built-in name used when --dataset is not given.")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="Feature windows and vocabularies.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Row-level source checks.")
    profiles: ResolutionConfig = Field(default_factory=ResolutionConfig, description="Identity resolution.")
