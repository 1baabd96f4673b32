"""What every ``cvm`` command shares, written once: the common options, the consoles, the
way an error a user can act on is printed and which exit status it gets, progress bars,
and help text that reads as prose.

Exit statuses: 0 done; 2 bad input or configuration (one line on stderr, no traceback);
3 the nightly batch's reconciliation failed; 4 its output could not be written; 1
anything else (a bug: the traceback is shown).
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

T = TypeVar("T")

console = Console(stderr=False)
err = Console(stderr=True)

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset: a directory of Parquet/CSV tables or the "
                                         "built-in name completejourney.")]
ConfigDatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset: a directory of Parquet/CSV "
                                                         "tables or the built-in name completejourney. Default: "
                                                         "`dataset` of --config.")]
AsOfOpt = Annotated[str, typer.Option("--as-of", help="Snapshot date YYYY-MM-DD: only data strictly before 00:00 of "
                                      "this day is used.")]
EngineOpt = Annotated[str, typer.Option("--engine", help="duckdb (embedded, default) or spark.")]
MasterOpt = Annotated[str | None, typer.Option("--spark-master", help="Spark master URL for --engine spark "
                                                  "(default local[*]).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML (sections: features, "
                                                   "validation, profiles).")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="State directory; default $CVM_HOME or ./cvm_home. "
                                                 "MLflow store: $MLFLOW_TRACKING_URI, else SQLite under it.",
                                                 envvar="CVM_HOME")]
CatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="Offer catalog YAML; default "
                                                    "scoring/catalogs/<dataset>.yaml.")]

#: errors of writing an output (exit 4): disk full, quota, read-only, permissions, I/O
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class UserError(Exception):
    """Something the user can fix; printed without a traceback (exit 2)."""


def prose(text: str | None) -> str:
    """A docstring as help text: each paragraph on one line (the terminal wraps it), so that
    no sentence breaks where the source happened to wrap. Lines starting a list item or
    indented further stay on lines of their own."""
    if not text:
        return ""
    paragraphs, current = [], []
    for line in inspect.cleandoc(text).splitlines():
        stripped = line.strip()
        if not stripped:
            if current:
                paragraphs.append(current)
            current = []
        elif current and (stripped.startswith(("* ", "- ")) or line.startswith(" ")):
            paragraphs.append(current)
            current = [stripped]
        else:
            current.append(stripped)
    if current:
        paragraphs.append(current)
    return "\n\n".join(" ".join(p) for p in paragraphs)


def command(app: typer.Typer, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``app.command`` with the docstring reflowed by ``prose``."""
    def register(fn: Callable[..., T]) -> Callable[..., T]:
        app.command(name, help=prose(fn.__doc__))(fn)
        return fn
    return register


def group(help_text: str) -> typer.Typer:
    """A command group (``cvm features ...``) with prose help."""
    return typer.Typer(help=prose(help_text), no_args_is_help=True)


def fail(message: str, code: int = 2) -> None:
    """Print one ``error:`` line on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err.print(f"[yellow]{escape(message)}[/]", soft_wrap=True)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message tells a user what to fix (exit 2), from every layer."""
    from base.config import ConfigError
    from base.errors import InputError
    from features.online_store import OnlineStoreError
    from features.snapshot import EmptySnapshotError, SchemaMismatchError
    from scoring.catalog import CatalogError
    from scoring.champions import NotReadyError
    from sources.dataset import DatasetError

    return (UserError, DatasetError, ConfigError, SchemaMismatchError, EmptySnapshotError, FileNotFoundError,
            OnlineStoreError, CatalogError, NotReadyError, InputError)


def run(fn: Callable[[], T], *extra: type[BaseException]) -> T:
    """Call ``fn``; an error a user can act on becomes one line and exit status 2, a write
    error (disk full, permissions) exit status 4."""
    try:
        return fn()
    except (*user_errors(), *extra) as exc:
        fail(_message(exc))
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        fail(f"writing failed: {exc}. Nothing was swapped in: the previous output is left in place. "
             "Free space (or fix permissions) and run again.", 4)
    raise AssertionError("unreachable")  # pragma: no cover


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)  # MLflow's exceptions
    return " ".join(str(message).split()) if message else str(exc)


def home_of(home: Path | None):
    """The ``Home`` of ``--home`` (or ``$CVM_HOME``, or ./cvm_home)."""
    from base.home import Home

    return Home.from_env(home)


def as_of_date(value: str, what: str = "--as-of") -> date:
    """``--as-of`` as a date (exit 2 when it is not one)."""
    from base.dates import parse_date

    try:
        return parse_date(value, what)
    except ValueError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")  # pragma: no cover


def quiet_mlflow(verbose: bool = False) -> None:
    """MLflow's telemetry off and its INFO chatter (table migrations, registrations) out of
    the terminal and a scheduler's log: the summaries say it already."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


_LOG_HANDLER: logging.Handler | None = None


def setup_logging(verbose: bool) -> None:
    """Warnings (quarantined rows...) on stderr, progress too with ``-v``. The handler writes
    to the current stderr, also when the CLI runs more than once in a process (the previous
    one is replaced); other handlers on the root logger are kept."""
    global _LOG_HANDLER
    root = logging.getLogger()
    if _LOG_HANDLER is not None:
        root.removeHandler(_LOG_HANDLER)
    _LOG_HANDLER = logging.StreamHandler(sys.stderr)
    _LOG_HANDLER.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(_LOG_HANDLER)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("py4j", "pyspark", "numexpr", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_mlflow(verbose)


@contextmanager
def step_progress(title: str, total: int | None) -> Iterator[Callable[[str], None]]:
    """A progress bar over a job's named steps (pulsing when their number is not known in
    advance); yields the callback that advances it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(title, total=total)
        done = -1

        def advance(name: str) -> None:
            nonlocal done
            done += 1
            bar.update(task, completed=done, description=f"{title}: {name}")

        yield advance
        if total is not None:
            bar.update(task, completed=total)


@contextmanager
def count_progress(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A bar over a count (customers scored, persons generated); yields ``update(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(),
                  console=err, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
