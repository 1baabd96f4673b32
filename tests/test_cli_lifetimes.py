"""What a CLI command leaves behind: help that reads as prose, and no engine left open
(no DuckDB connection, no file of the home held open, no Spark JVM)."""

from __future__ import annotations

import gc
import inspect

import psutil
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from cvm.cli import app
from cvm.common import prose
from tests.conftest import AS_OF


def _commands(group, path=()):
    """Every (command path, click command) of the app, groups included."""
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_prose_joins_the_lines_of_a_paragraph_and_keeps_list_items():
    text = """First sentence that the source
    wrapped here. Second one.

    * an item
    * another item
    """
    assert prose(text) == "First sentence that the source wrapped here. Second one.\n\n* an item\n\n* another item"


def _command(path):
    command = get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _help_lines(path) -> list[str]:
    r = CliRunner().invoke(app, [*path, "--help"], terminal_width=1000, env={"COLUMNS": "1000"})
    assert r.exit_code == 0, r.output
    return [" ".join(ln.strip(" │").split()) for ln in r.output.splitlines()]


@pytest.mark.parametrize("path", [p for p, _ in _commands(get_command(app))], ids=lambda p: " ".join(p) or "cvm")
def test_help_reads_as_prose(path):
    """Each paragraph of a command's help is one line of `--help` on a wide terminal, in its
    own page and in its group's listing: no sentence breaks where the docstring wrapped."""
    command = _command(path)
    paragraphs = [" ".join(p.split()) for p in (command.help or "").split("\n\n")]
    assert paragraphs[0], f"{' '.join(path) or 'cvm'} has no help"
    lines = _help_lines(path)
    for paragraph in paragraphs:
        assert any(paragraph in ln for ln in lines), (paragraph, lines)
    if path:
        assert any(paragraphs[0] in ln for ln in _help_lines(path[:-1])), paragraphs[0]
    callback = getattr(command, "callback", None)
    if callback is not None and callback.__doc__ and not isinstance(command, typer.core.TyperGroup):
        assert command.help == prose(inspect.getdoc(callback))


def _open_duckdb_connections() -> set[int]:
    import duckdb

    gc.collect()
    open_ = set()
    for obj in gc.get_objects():
        if isinstance(obj, duckdb.DuckDBPyConnection):
            try:
                obj.execute("SELECT 1")
            except duckdb.ConnectionException:
                continue
            open_.add(id(obj))
    return open_


def _files_open_under(root) -> list[str]:
    return [f.path for f in psutil.Process().open_files() if f.path.startswith(str(root))]


def test_no_engine_left_open_after_a_duckdb_command(tiny_dataset, home):
    from base.engines import open_engines

    before = _open_duckdb_connections()
    runner = CliRunner()
    for args in (["features", "build", "--dataset", str(tiny_dataset), "--as-of", AS_OF.isoformat(), "--publish"],
                 ["sources", "check", "--dataset", str(tiny_dataset)],
                 ["features", "lookup", "--dataset", str(tiny_dataset), "A"]):
        r = runner.invoke(app, [*args, "--home", str(home.root)])
        assert r.exit_code == 0, r.output
        assert open_engines() == [], args
        assert _open_duckdb_connections() <= before, args
        assert _files_open_under(home.root) == [], args


@pytest.mark.spark
def test_no_jvm_left_after_a_spark_command(tiny_dataset, home):
    """`--engine spark` starts a JVM for the command and stops it when the command ends."""
    from pyspark import SparkContext

    from base.engines import open_engines

    # a Spark session shared by other tests would be borrowed, not stopped: this test needs none
    assert SparkContext._active_spark_context is None, "a Spark session from another test is still running"
    me = psutil.Process()
    jvms_before = {p.pid for p in me.children(recursive=True) if "java" in p.name()}
    r = CliRunner().invoke(app, ["features", "build", "--dataset", str(tiny_dataset), "--as-of", AS_OF.isoformat(),
                                 "--engine", "spark", "--home", str(home.root)])
    assert r.exit_code == 0, r.output
    assert open_engines() == []
    assert SparkContext._gateway is None and SparkContext._active_spark_context is None
    left = [p for p in me.children(recursive=True) if "java" in p.name() and p.pid not in jvms_before]
    psutil.wait_procs(left, timeout=30)
    assert [p.pid for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
