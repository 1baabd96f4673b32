"""Declarative experiments: one YAML file (``experiments/*.yaml``) per experiment.

``experiments/<dataset>.yaml`` holds what every command shares (features, validation,
identity resolution: ``features.build_config.BuildConfig``); ``experiments/<task>.yaml``
adds a ``train`` section for one task and ``extends`` the dataset's file;
``experiments/uplift.yaml`` has the ``uplift`` section of ``cvm train uplift``.

Every section is a strict pydantic model (unknown keys are errors, every field has a
description); a missing section takes its defaults.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field

from base.config import merge, read_yaml, validate
from features.build_config import BuildConfig
from training.config import TrainConfig
from training.uplift.config import UpliftConfig


class ProjectConfig(BuildConfig):
    train: TrainConfig = Field(default_factory=TrainConfig, description="Labels, origins, search and budgets of "
                               "one training task (experiments/<task>.yaml).")
    uplift: UpliftConfig = Field(default_factory=UpliftConfig, description="What cvm train uplift fits and how it "
                                 "chooses (experiments/uplift.yaml).")


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
        raw = read_yaml(path)
    if base is not None:
        raw = merge(read_yaml(base), {k: v for k, v in raw.items() if k == "train"})
    return validate(ProjectConfig, raw, path or base)


def task_config(task: str, config: Path | None, experiments: Path) -> tuple[ProjectConfig, str]:
    """``experiments/<task>.yaml`` (training settings; its ``extends`` gives the dataset's
    sections) over ``config`` when given; returns the config and its effective YAML, which
    the training run logs."""
    task_file = experiments / f"{task}.yaml"
    path = task_file if task_file.exists() else None
    cfg = load_config(path, base=config)
    sources = ", ".join(str(p) for p in (config, path) if p is not None) or "defaults"
    text = f"# effective configuration of `cvm train {task}` (from {sources})\n" + yaml.safe_dump(
        cfg.model_dump(mode="json"), sort_keys=False)
    return cfg, text


def dataset_config(dataset_name: str, experiments: Path = Path("experiments")) -> Path | None:
    """``experiments/<dataset>.yaml`` when it exists: the nightly batch's default feature settings."""
    path = experiments / f"{dataset_name}.yaml"
    return path if path.exists() else None
