"""Declarative configuration files: YAML mappings, an ``extends`` chain, strict validation.

The sections themselves are pydantic models declared by the layers that own them
(``features``, ``sources``, ``profiles``, ``training``); this module only reads files,
merges an ``extends:`` chain and turns validation errors into one message naming the
file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from base.errors import InputError

M = TypeVar("M", bound=BaseModel)


class ConfigError(InputError):
    """The configuration file is missing or invalid; the message names the file and the field."""


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
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
    return merge(read_yaml(path.parent / parent, (*seen, path.resolve())), raw)


def merge(base: dict, override: dict) -> dict:
    """Sections of ``override`` replace those of ``base`` key by key (mappings merged deeply)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validate(model: type[M], raw: dict, where: object) -> M:
    """``model`` from ``raw``; a ``ConfigError`` listing every problem as ``section.field: message``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from exc
