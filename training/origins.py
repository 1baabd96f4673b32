"""Rolling origins: which snapshot dates train, validate and test a model for ``as_of``.

Backtesting "as if today were as_of" means every label window must end by as_of. The
latest fully observed snapshot (as_of - H) is the test set; validation (for tuning,
early stopping and calibration) is the snapshot whose labels end where the test's
begin; training snapshots end where validation begins, spaced ``step_days`` apart,
each with at least ``min_history_days`` of data behind it. No label window of one
split overlaps the next split's, so nothing learnt in training peeks at validation or
test outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from training.config import OriginConfig


class InsufficientHistoryError(ValueError):
    """Not enough data before as_of for train, validation and test snapshots."""


@dataclass(frozen=True)
class Origins:
    train: tuple[date, ...]  # oldest first
    valid: date
    test: date
    horizon_days: int

    def as_dict(self) -> dict:
        return {"train": [d.isoformat() for d in self.train], "valid": self.valid.isoformat(),
                "test": self.test.isoformat(), "horizon_days": self.horizon_days}


def plan_origins(as_of: date, data_start: date, horizon_days: int, cfg: OriginConfig) -> Origins:
    h = timedelta(days=horizon_days)
    test = as_of - h
    valid = test - h
    earliest = data_start + timedelta(days=cfg.min_history_days)
    train = [valid - h - timedelta(days=k * cfg.step_days) for k in range(cfg.max_train_origins)]
    train = sorted(d for d in train if d >= earliest)
    if not train:
        raise InsufficientHistoryError(
            f"as_of {as_of}: with a {horizon_days}-day horizon the test snapshot is {test}, validation "
            f"{valid}, and the latest training snapshot would be {valid - h}, before the data allows "
            f"({earliest} = first data {data_start} + {cfg.min_history_days} days of history). "
            "Use a later --as-of or a shorter --horizon-days.")
    return Origins(tuple(train), valid, test, horizon_days)


def longest_horizon(as_of: date, data_start: date, cfg: OriginConfig, cap_days: int) -> int:
    """The longest horizon that still leaves one training, one validation and one test
    snapshot with their label windows before as_of (capped at ``cap_days``)."""
    room = (as_of - data_start).days - cfg.min_history_days
    horizon = min(cap_days, room // 3)
    if horizon < 7:
        raise InsufficientHistoryError(
            f"as_of {as_of}: only {room + cfg.min_history_days} days of data since {data_start}; "
            "a clv horizon needs three windows of at least a week after the minimum history")
    return horizon
