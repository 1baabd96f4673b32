"""Declarative configuration: one YAML file (``experiments/*.yaml``) per experiment.

``experiments/<dataset>.yaml`` holds what every command shares (features, validation,
identity resolution); ``experiments/<task>.yaml`` adds a ``train`` section for one task.

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
from training.config import TrainConfig


class ConfigError(ValueError):
    """The configuration file is missing or invalid; the message names the file and the field."""


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="Dataset directory or built-in name used when --dataset is not given.")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="Feature windows and vocabularies.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Row-level source checks.")
    profiles: ResolutionConfig = Field(default_factory=ResolutionConfig, description="Identity resolution.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Labels, origins, search and budgets of "
                               "one training task (experiments/<task>.yaml).")


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The YAML mapping at ``path`` with its ``extends:`` chain merged underneath."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: `extends` must be the path of another YAML file")
    return merge(_read(path.parent / parent, (*seen, path.resolve())), raw)


def merge(base: dict, override: dict) -> dict:
    """Sections of ``override`` replace those of ``base`` key by key (mappings merged deeply)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: Path | None, base: Path | None = None) -> ProjectConfig:
    """Validate the YAML at ``path``.

    A file may start from another one with ``extends: other.yaml`` (relative to itself):
    its sections are merged over the other's. ``base``, when given, replaces that chain's
    root: ``cvm train churn --config experiments/synthetic.yaml`` trains with the synthetic
    dataset's feature settings and ``experiments/churn.yaml``'s training settings.
    """
    if path is None and base is None:
        return ProjectConfig()
    raw: dict = {}
    if path is not None:
        raw = _read(path)
    if base is not None:
        raw = merge(_read(base), {k: v for k, v in raw.items() if k == "train"})
    where = path or base
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from exc
