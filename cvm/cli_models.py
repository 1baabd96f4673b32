"""``cvm models``: the registered models, their champion and how to change it by hand.

Thin commands over :mod:`training.registry`. MLflow is imported inside the commands to
keep ``cvm --help`` fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from cvm.common import HomeOpt, command, console, group, home_of, quiet_mlflow
from cvm.common import run as run_cli

models_app = group("Registered models (MLflow): list versions, promote a version to champion, roll back.")

TaskArg = Annotated[str, typer.Argument(help="Task (churn, next-purchase, cross-sell, clv) or registered name "
                                        "(cvm-churn...).")]

T = TypeVar("T")


def _run(fn: Callable[[], T]) -> T:
    """Errors a user can act on (unknown task or version, nothing to roll back, unreachable server): exit 2."""
    from mlflow.exceptions import MlflowException

    from training.registry import RegistryError

    return run_cli(fn, RegistryError, MlflowException)


def _client(home):
    from training.tracking import configure

    quiet_mlflow()
    return configure(home_of(home))


@command(models_app, "list")
def models_list(
    task: Annotated[list[str] | None, typer.Option("--task", "-t", help="Only this task (repeatable); default all four.")] = None,
    home: HomeOpt = None,
) -> None:
    """List every registered version: aliases (champion, challenger...), snapshot date, primary metric."""
    def go() -> None:
        from training.registry import RegistryError, list_versions

        rows = list_versions(_client(home), task or None)
        if not rows:
            raise RegistryError(f"no registered model{' for ' + ', '.join(task) if task else ''} yet: "
                                "train one with `cvm train TASK`")
        t = Table(title="registered models")
        for col in ("name", "version", "aliases", "as_of", "primary metric", "created"):
            t.add_column(col, justify="right" if col == "version" else "left")
        for r in rows:
            value = "-" if r["value"] is None else f"{r['value']:.4f}"
            t.add_row(r["name"], r["version"], ", ".join(r["aliases"]) or "-", r["as_of"] or "-",
                      f"{r['metric']} {value}", r["created"])
        console.print(t)

    _run(go)


@command(models_app, "promote")
def models_promote(
    task: TaskArg,
    version: Annotated[str, typer.Argument(help="Version number to make champion (3 or v3).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why, kept in the champion history.")] = "manual",
    home: HomeOpt = None,
) -> None:
    """Make VERSION the champion by hand, without the gate; the current champion becomes previous-champion."""
    def go() -> None:
        from training.registry import promote

        d = promote(_client(home), task, version, reason)
        console.print(f"{d.name} version {d.version}: {d.reason}")

    _run(go)


@command(models_app, "rollback")
def models_rollback(task: TaskArg, home: HomeOpt = None) -> None:
    """Give the champion alias back to the previous champion (repeat to go further back)."""
    def go() -> None:
        from training.registry import rollback

        d = rollback(_client(home), task)
        console.print(f"{d.name}: {d.reason}")

    _run(go)
