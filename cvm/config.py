"""Declarative configuration: one YAML file (``experiments/*.yaml``) per experiment.

Every section is a strict pydantic model (unknown keys are errors, every field has a
description); a missing section takes its defaults.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.config import FeatureConfig
from profiles.resolve import ResolutionConfig
from sources.validate import ValidationConfig


class ConfigError(ValueError):
    """The configuration file is missing or invalid; the message names the file and the field."""


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="Dataset directory or built-in name used when --dataset is not given.")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="Feature windows and vocabularies.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Row-level source checks.")
    profiles: ResolutionConfig = Field(default_factory=ResolutionConfig, description="Identity resolution.")


def load_config(path: Path | None) -> ProjectConfig:
    if path is None:
        return ProjectConfig()
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
