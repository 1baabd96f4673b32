"""The shipped experiment configs load, and every model in them is strict."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.config import ConfigError
from training.experiment import load_config

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.features.windows_days == sorted(cfg.features.windows_days)


def test_unknown_sections_and_keys_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("featurez: {}\n")
    with pytest.raises(ConfigError, match="featurez"):
        load_config(bad)
    bad.write_text("validation:\n  max_abs_amount: -1\n")
    with pytest.raises(ConfigError, match="validation.max_abs_amount"):
        load_config(bad)
