"""The layers point one way (import-linter, the contract in pyproject.toml), and the check
catches an upward import and a cycle when one is written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, str(root / "pyproject.toml"), "--no-cache", "--no-logo"], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, check=False)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The project's packages and its pyproject.toml, in a folder a test may break."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for package in CONFIG["root_packages"]:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    return root


def test_the_layers_are_declared_in_the_data_order():
    layers = next(c for c in CONFIG["contracts"] if c["type"] == "layers")["layers"]
    assert layers == ["cvm", "serving | batch | report", "scoring", "training", "features", "profiles", "sources",
                      "base"]
    assert set(CONFIG["root_packages"]) == {p.strip() for layer in layers for p in layer.split("|")}


def test_the_code_keeps_the_contract():
    r = _lint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 kept, 0 broken" in r.stdout


@pytest.mark.parametrize("where, code, broken", [
    ("sources/upward.py", "from serving import engine\n", "sources -> serving"),  # a lower layer reaching up
    ("base/upward.py", "def f():\n    import cvm.cli\n", "base -> cvm"),  # even inside a function
    ("serving/sideways.py", "import batch.job\n", "serving -> batch"),  # siblings stay independent
    ("scoring/cycle.py", "import scoring.cycle_b\n", "cycle"),  # two modules of a package importing each other
], ids=["upward", "upward-in-function", "sideways", "cycle"])
def test_a_violation_breaks_the_contract(copy, where, code, broken):
    extra = [copy / where]
    extra[0].write_text(code)
    if broken == "cycle":
        extra.append(copy / "scoring" / "cycle_b.py")
        extra[1].write_text("import scoring.cycle\n")
    try:
        r = _lint(copy)
        assert r.returncode != 0, r.stdout
        assert "1 broken" in r.stdout
        if broken == "cycle":
            assert "No cycles are allowed in scoring" in r.stdout
        else:
            importer, imported = broken.split(" -> ")
            assert f"{importer}." in r.stdout and f"-> {imported}" in r.stdout, r.stdout
    finally:
        for path in extra:
            path.unlink()
    assert _lint(copy).returncode == 0  # the copy is whole again
