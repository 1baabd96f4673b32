"""The training loop behind ``cvm train TASK|all``: each task's experiment file, its
dataset, one engine for all of them, ``train_task`` per task.

A task the data cannot support (no categories: no cross-sell) is skipped with the reason;
a task whose ``as_of`` leaves too little history is reported as too early, which the CLI
turns into an error the user can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from base.engines import open_engine
from base.errors import InputError
from base.home import Home
from sources.dataset import DatasetError, resolve_dataset
from training.dataset import TaskUnavailableError
from training.experiment import task_config
from training.origins import InsufficientHistoryError
from training.pipeline import TaskResult, train_task
from training.tasks import TASKS


@dataclass
class TrainingRun:
    results: list[TaskResult] = field(default_factory=list)
    #: task -> why it was skipped (the data cannot support it)
    skipped: dict[str, str] = field(default_factory=dict)
    #: task -> why ``as_of`` is too early for it
    too_early: dict[str, str] = field(default_factory=dict)


def expand(task: str) -> list[str]:
    """``all`` -> every task; a task name -> itself; ``InputError`` naming the choices otherwise."""
    if task == "all":
        return list(TASKS)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}: choose {', '.join(TASKS)} or all")
    return [task]


def train_tasks(tasks: Sequence[str], as_of: date, home: Home, *, dataset: str | None = None,
                horizon_days: int | None = None, trials: int | None = None, config: Path | None = None,
                experiments: Path = Path("experiments"),
                progress: Callable[[str, str], None] | None = None) -> TrainingRun:
    """Train each task as if today were ``as_of``; ``progress(task, step)`` follows the steps."""
    run = TrainingRun()
    with open_engine("duckdb", temp_dir=home.tmp(ensure=True)) as engine:
        for task in tasks:
            cfg, text = task_config(task, config, experiments)
            spec = dataset or cfg.dataset
            if not spec:
                raise DatasetError("no dataset: pass --dataset DIR|completejourney (or set `dataset:` in --config)")
            ds = resolve_dataset(spec, home, progress=True)
            step = (lambda name, t=task: progress(t, name)) if progress is not None else None
            try:
                run.results.append(train_task(task, ds, as_of, engine, home, cfg, cfg.train,
                                              horizon_days=horizon_days, trials=trials, config_text=text,
                                              step=step))
            except TaskUnavailableError as exc:  # the data cannot support the task: not an error
                run.skipped[task] = str(exc)
            except InsufficientHistoryError as exc:  # the as_of asked for is too early: the user's to fix
                run.too_early[task] = str(exc)
    return run
