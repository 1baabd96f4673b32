"""``cvm train``: train, judge against baselines, log to MLflow and register, as of a date."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cvm.common import (
    AsOfOpt,
    ConfigDatasetOpt,
    HomeOpt,
    UserError,
    as_of_date,
    err,
    home_of,
    run,
    step_progress,
)
from cvm.output import print_training

DEFAULT_EXPERIMENTS = Path("experiments")


def train_and_report(tasks: list[str], dataset: str | None, as_of: str, *, horizon_days: int | None = None,
                     trials: int | None = None, config: Path | None = None,
                     experiments: Path = DEFAULT_EXPERIMENTS, home: Path | None = None) -> list:
    """Train ``tasks`` with a progress bar, print each against its baselines; a task whose
    --as-of is too early is an error the user can act on (exit 2)."""
    from training.runner import train_tasks

    day = as_of_date(as_of)
    with step_progress(f"train as_of {day}", None) as advance:
        trained = train_tasks(tasks, day, home_of(home), dataset=dataset, horizon_days=horizon_days, trials=trials,
                              config=config, experiments=experiments,
                              progress=lambda task, step: advance(f"{task}: {step}"))
    for task, why in {**trained.skipped, **trained.too_early}.items():
        err.print(f"[yellow]skipped {task}:[/] {escape(why)}", soft_wrap=True)
    if trained.results:
        print_training(trained.results)
    if trained.too_early:
        raise UserError(f"not enough history before --as-of {as_of} for: {', '.join(trained.too_early)}")
    return trained.results


def train_uplift_and_report(dataset: str | None, as_of: str, *, log: str | None, config: Path | None,
                            catalog: Path | None, home: Path | None) -> object:
    """``cvm train uplift``: nothing randomised to learn from is an error the user can act on (exit 2)."""
    from batch.uplift_job import run_uplift_training
    from cvm.output import print_uplift
    from training.uplift.data import NoRandomisedDataError

    if not dataset:
        raise UserError("cvm train uplift needs --dataset DIR|completejourney")
    day = as_of_date(as_of)
    try:
        with step_progress(f"train uplift as_of {day}", None) as advance:
            result = run_uplift_training(home_of(home), dataset, day, log_url=log, config=config,
                                         catalog_path=catalog, step=advance)
    except NoRandomisedDataError as exc:
        raise UserError(str(exc)) from None
    print_uplift(result)
    return result


def train(
    task: Annotated[str, typer.Argument(help="churn, next-purchase, cross-sell, clv, all, or uplift "
                                             "(from randomised assignments: the decision log or contacts "
                                             "with a group column).")],
    as_of: AsOfOpt,
    dataset: ConfigDatasetOpt = None,
    horizon_days: Annotated[int | None, typer.Option("--horizon-days", min=1, help="Label window H (default: per "
                                                        "task, from the config).")] = None,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="Optuna trials (default: the config's "
                                                  "budget).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Dataset-level experiment YAML (features, "
                                                   "validation, profiles) under the task's training settings; "
                                                   "default: what experiments/<task>.yaml extends.")] = None,
    experiments: Annotated[Path, typer.Option("--experiments", help="Folder of per-task experiment YAMLs.")]
    = DEFAULT_EXPERIMENTS,
    log: Annotated[str | None, typer.Option("--log", help="uplift: the decision log to learn from (a "
                                            "decisions.sqlite path, sqlite:///path or postgresql://...; "
                                            "default: the dataset's log under CVM_HOME).")] = None,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="uplift: the offer catalog the log was "
                                                 "decided with (for the synthetic truth).")] = None,
    home: HomeOpt = None,
) -> None:
    """Train, evaluate against baselines, log to MLflow and register, as if today were --as-of.

    Only data strictly before --as-of is read: the test snapshot is the latest whose label
    window ends by --as-of, validation precedes it, training snapshots precede validation.
    ``uplift`` learns who a contact changes from randomised assignments, validated on a later
    period, and registers cvm-uplift."""
    from training.runner import expand

    if task == "uplift":
        url = log if log is None or "://" in log else f"sqlite:///{Path(log).resolve()}"
        run(lambda: train_uplift_and_report(dataset, as_of, log=url, config=config, catalog=catalog, home=home))
        return
    run(lambda: train_and_report(expand(task), dataset, as_of, horizon_days=horizon_days, trials=trials,
                                 config=config, experiments=experiments, home=home))
