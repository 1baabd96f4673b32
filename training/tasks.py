"""The task registry: every fact about a task, declared once.

A task is what one registered model predicts. Training (labels, objective, the gate),
the registry, the scoring core (which outputs a champion gives), the batch's missing
tasks, the report's cards and the CLI's tables all read this table instead of spelling
the task list, a model name or a judged metric themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Task = Literal["churn", "next-purchase", "cross-sell", "clv"]
Direction = Literal["max", "min"]


@dataclass(frozen=True)
class TaskSpec:
    name: Task
    #: the LightGBM objective family of the main model: a probability or a value
    kind: Literal["binary", "value"]
    #: score columns a champion of the task gives per customer (cross-sell: one per category)
    outputs: tuple[str, ...]
    #: test metrics the model must beat every baseline on, with the better direction; the
    #: first is the primary metric, the one the champion/challenger gate compares
    judged: tuple[tuple[str, Direction], ...]
    #: label window when the config does not say (None: the longest the data allows)
    default_horizon_days: int | None
    #: registered model name in MLflow
    model_name: str

    @property
    def primary(self) -> str:
        return self.judged[0][0]

    @property
    def direction(self) -> Direction:
        return self.judged[0][1]

    @property
    def experiment(self) -> str:
        """The MLflow experiment of its training runs: named like the registered model."""
        return self.model_name

    @property
    def is_probability(self) -> bool:
        return self.kind == "binary"


TASK_SPECS: dict[Task, TaskSpec] = {s.name: s for s in (
    TaskSpec("churn", "binary", ("churn_probability",), (("test_auc", "max"),), 28, "cvm-churn"),
    TaskSpec("next-purchase", "binary", ("next_purchase_probability", "expected_orders"),
             (("test_auc", "max"), ("test_orders_mae", "min")), 14, "cvm-next-purchase"),
    TaskSpec("cross-sell", "binary", ("cross_sell",), (("test_mean_category_auc", "max"),), 28,
             "cvm-cross-sell"),
    TaskSpec("clv", "value", ("clv",), (("test_mae", "min"),), None, "cvm-clv"),
)}
#: every task, in the order commands run and print them
TASKS: tuple[Task, ...] = tuple(TASK_SPECS)

#: the uplift model (``training.uplift``): registered and gated like a task, but trained
#: from randomised assignments (``cvm train uplift``), not by ``cvm train all``, and scored
#: per customer and offer, not per customer
UPLIFT_SPEC = TaskSpec("uplift", "binary", ("uplift",), (("valid_qini", "max"),), 28,  # type: ignore[arg-type]
                       "cvm-uplift")
#: every registered model's spec: the tasks and uplift (the registry's view)
MODEL_SPECS: dict[str, TaskSpec] = {**TASK_SPECS, "uplift": UPLIFT_SPEC}


def spec(task: str) -> TaskSpec:
    """The task's spec; ``KeyError`` naming the known tasks otherwise."""
    try:
        return TASK_SPECS[task]  # type: ignore[index]
    except KeyError:
        raise KeyError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}") from None
