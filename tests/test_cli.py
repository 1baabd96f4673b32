"""The `cvm` command as users run it: --help everywhere, real data, clear errors, CVM_HOME."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import click
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cvm.cli import app
from tests.conftest import tiny_tables, write_dataset

runner = CliRunner()


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


ALL_COMMANDS = [()] + list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "cvm")
def test_every_command_has_help(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert len(result.output.strip().splitlines()) > 3


def test_installed_entry_point():
    cvm = Path(sys.executable).with_name("cvm")
    out = subprocess.run([str(cvm), "--help"], capture_output=True, text=True, check=True)
    assert "features" in out.stdout and "synth" in out.stdout


@pytest.fixture
def cli_home(tmp_path, monkeypatch):
    home = tmp_path / "state"
    monkeypatch.setenv("CVM_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def test_features_build_on_completejourney(cli_home, tmp_path):
    from sources.completejourney import package_data_dir

    result = runner.invoke(app, ["features", "build", "--dataset", "completejourney", "--as-of", "2017-10-01",
                                 "--publish"])
    assert result.exit_code == 0, result.output
    # every household with a transaction before as_of, counted straight from the package's data
    tx = pd.read_parquet(package_data_dir() / "transactions.parquet",
                         columns=["household_id", "transaction_timestamp"])
    expected = tx.loc[tx.transaction_timestamp < pd.Timestamp("2017-10-01"), "household_id"].nunique()
    snap = cli_home / "features" / "completejourney" / "as_of=2017-10-01"
    got = pd.read_parquet(snap)
    assert len(got) == expected
    assert f"{expected:,}" in result.output
    assert (got.as_of == date(2017, 10, 1)).all()
    assert got.recency_days.min() >= 1, "nothing on or after as_of"
    assert not (tmp_path / "cvm_home").exists(), "state must go under CVM_HOME only"
    assert (cli_home / "online" / "completejourney" / "CURRENT.json").exists()

    some_id = got.customer_id.iloc[0]
    looked = runner.invoke(app, ["features", "lookup", "--dataset", "completejourney", some_id])
    assert looked.exit_code == 0, looked.output
    assert "rfm_segment" in looked.output and got.rfm_segment.iloc[0] in looked.output
    unknown = runner.invoke(app, ["features", "lookup", "--dataset", "completejourney", "no-such-id"])
    assert unknown.exit_code == 2 and "not in the published snapshot" in unknown.output
    schema = runner.invoke(app, ["features", "schema", "--dataset", "completejourney"])
    assert schema.exit_code == 0 and "recency_days" in schema.output and "spend_share_grocery" in schema.output


def test_product_category_level_on_completejourney(cli_home):
    result = runner.invoke(app, ["features", "build", "--dataset", "completejourney", "--as-of", "2017-07-01",
                                 "--category-column", "product_category", "--out", "pc"])
    assert result.exit_code == 0, result.output
    cols = pd.read_parquet(Path("pc") / "as_of=2017-07-01").columns
    assert any(c.startswith("spend_share_") for c in cols)
    assert "spend_share_grocery" not in cols  # department names are not product categories


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--as-of", "2024-02-30"], "is not a date", id="bad-date"),
        pytest.param(["--as-of", "2024-03-01", "--engine", "presto"], "choose duckdb or spark", id="bad-engine"),
        pytest.param(["--as-of", "2001-01-01"], "no customer has an order before 2001-01-01", id="empty-window"),
    ],
)
def test_user_errors_are_one_clear_line(cli_home, tiny_dataset, args, message):
    result = runner.invoke(app, ["features", "build", "--dataset", str(tiny_dataset), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_dataset(cli_home):
    result = runner.invoke(app, ["features", "build", "--dataset", "nowhere", "--as-of", "2024-01-01"])
    assert result.exit_code == 2
    assert "neither an existing directory nor a built-in name" in result.output


def test_missing_column_names_file_and_column(cli_home, tmp_path):
    tx = tiny_tables()["transactions"].drop(columns=["timestamp"])
    root = write_dataset(tmp_path / "broken", {"transactions": tx}, fmt="csv")
    result = runner.invoke(app, ["sources", "check", "--dataset", str(root)])
    assert result.exit_code == 2
    assert "transactions.csv" in result.output and "'timestamp'" in result.output


def test_sources_check_counts_quarantine(cli_home, tmp_path):
    from tests.test_sources import BAD_CSV

    root = tmp_path / "bad"
    root.mkdir()
    (root / "transactions.csv").write_text(BAD_CSV)
    result = runner.invoke(app, ["sources", "check", "--dataset", str(root)])
    assert result.exit_code == 0, result.output
    assert "11" in result.output and "quarantined rows" in result.output
    assert (cli_home / "quarantine" / "bad" / "transactions").is_dir()


def test_invalid_config_names_the_field(cli_home, tiny_dataset, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("features:\n  windows_days: [30, 30]\n  colour: blue\n")
    result = runner.invoke(app, ["features", "build", "--dataset", str(tiny_dataset), "--as-of", "2024-03-01",
                                 "--config", str(cfg)])
    assert result.exit_code == 2
    assert "features.windows_days" in result.output and "features.colour" in result.output


def test_config_windows_reach_the_snapshot(cli_home, tiny_dataset, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("features:\n  windows_days: [14, 60]\n")
    result = runner.invoke(app, ["features", "build", "--dataset", str(tiny_dataset), "--as-of", "2024-03-01",
                                 "--config", str(cfg), "--out", "o"])
    assert result.exit_code == 0, result.output
    cols = pd.read_parquet(Path("o") / "as_of=2024-03-01").columns
    assert "orders_14d" in cols and "orders_60d" in cols and "orders_30d" not in cols


def test_changed_feature_set_is_refused_then_replaced(cli_home, tiny_dataset, tmp_path):
    base = ["features", "build", "--dataset", str(tiny_dataset), "--as-of", "2024-03-01"]
    assert runner.invoke(app, base).exit_code == 0
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("features:\n  windows_days: [7]\n")
    refused = runner.invoke(app, [*base, "--config", str(cfg)])
    assert refused.exit_code == 2 and "--replace-schema" in refused.output
    replaced = runner.invoke(app, [*base, "--config", str(cfg), "--replace-schema"])
    assert replaced.exit_code == 0, replaced.output


def test_synth_then_features_and_linkage_quality(cli_home, tmp_path):
    out = tmp_path / "syn"
    made = runner.invoke(app, ["synth", "--customers", "1500", "--out", str(out), "--seed", "3"])
    assert made.exit_code == 0, made.output
    assert (out / "truth" / "records.parquet").exists()
    built = runner.invoke(app, ["features", "build", "--dataset", str(out), "--as-of", "2025-06-01"])
    assert built.exit_code == 0, built.output
    assert "identity resolution" in built.output
    snap = pd.read_parquet(cli_home / "features" / "syn" / "as_of=2025-06-01")
    assert snap.customer_id.is_unique
    assert {"events_add_to_cart_90d", "abandoned_carts_90d", "contacts_365d", "attr_region"} <= set(snap.columns)
    assert (cli_home / "profiles" / "syn" / "as_of=2025-06-01" / "profile_map.parquet").exists()
    quality = runner.invoke(app, ["profiles", "evaluate", "--dataset", str(out)])
    assert quality.exit_code == 0, quality.output
    assert "precision" in quality.output and "recall" in quality.output
    golden = runner.invoke(app, ["profiles", "build", "--dataset", str(out)])
    assert golden.exit_code == 0, golden.output
    profiles = pd.read_parquet(cli_home / "profiles" / "syn" / "latest" / "profiles.parquet")
    assert profiles.customer_id.is_unique and len(profiles) > 1000


def test_synth_refuses_to_overwrite_other_data(cli_home, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["synth", "--customers", "10", "--out", str(target)])
    assert result.exit_code == 2
    assert (target / "notes.txt").read_text() == "keep me"


@pytest.mark.spark
def test_spark_engine_from_the_cli(cli_home, tiny_dataset):
    result = runner.invoke(app, ["features", "build", "--dataset", str(tiny_dataset), "--as-of", "2024-03-01",
                                 "--engine", "spark", "--spark-master", "local[2]", "--out", "sp"])
    assert result.exit_code == 0, result.output
    assert "(spark)" in result.output
    assert len(pd.read_parquet(Path("sp") / "as_of=2024-03-01")) == 3


def test_dataset_from_the_experiment_config(cli_home):
    config = Path(__file__).parent.parent / "experiments" / "completejourney.yaml"
    result = runner.invoke(app, ["features", "build", "--config", str(config), "--as-of", "2017-04-01"])
    assert result.exit_code == 0, result.output
    assert (cli_home / "features" / "completejourney" / "as_of=2017-04-01").is_dir()
    missing = runner.invoke(app, ["features", "build", "--as-of", "2017-04-01"])
    assert missing.exit_code == 2 and "no dataset" in missing.output
