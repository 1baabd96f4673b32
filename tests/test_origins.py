"""Rolling origins: every label window ends by as_of; splits do not overlap in time."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from training.config import OriginConfig
from training.origins import InsufficientHistoryError, longest_horizon, plan_origins


def test_completejourney_churn_origins():
    o = plan_origins(date(2017, 11, 1), date(2017, 1, 1), 28, OriginConfig(step_days=28, min_history_days=60))
    assert o.test == date(2017, 10, 4) and o.valid == date(2017, 9, 6)
    assert o.train[-1] == date(2017, 8, 9)  # its labels end where validation starts
    assert all(b - a == timedelta(days=28) for a, b in zip(o.train, o.train[1:]))
    assert o.train[0] >= date(2017, 3, 2)  # 60 days of history
    assert o.test + timedelta(days=28) == date(2017, 11, 1)


@pytest.mark.parametrize("horizon", [7, 14, 28, 81])
def test_windows_never_overlap_and_end_by_as_of(horizon):
    as_of, start = date(2017, 11, 1), date(2017, 1, 1)
    o = plan_origins(as_of, start, horizon, OriginConfig(step_days=7, min_history_days=60, max_train_origins=20))
    h = timedelta(days=horizon)
    assert o.test + h <= as_of
    assert o.valid + h <= o.test
    assert max(o.train) + h <= o.valid


def test_too_little_history_is_a_clear_error():
    with pytest.raises(InsufficientHistoryError, match="shorter --horizon-days"):
        plan_origins(date(2017, 3, 1), date(2017, 1, 1), 28, OriginConfig())


def test_longest_horizon_leaves_three_windows():
    h = longest_horizon(date(2017, 11, 1), date(2017, 1, 1), OriginConfig(min_history_days=60), cap_days=365)
    assert h == (304 - 60) // 3
    assert longest_horizon(date(2030, 1, 1), date(2017, 1, 1), OriginConfig(), cap_days=365) == 365
