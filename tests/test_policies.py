"""Candidate policies for off-policy evaluation, and the rounds the evaluation reads from a log,
on tables small enough to check by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from batch.ope_job import OPEError, first_decisions, parse_window, rewards
from scoring.policies import (
    NO_OFFER,
    action_index,
    action_list,
    by_expected_value,
    by_popularity,
    by_propensity,
    cross_fitted_means,
    fold_of,
    logging_support,
    nothing,
    one_hot,
    popularity,
    uniform,
    unsupported_share,
)

# three customers x three offers, as scoring.nbo.arbitrate returns them
RESULT = {
    # customer 0: all eligible; 1: offer b below the minimum, c capped; 2: nothing passes the rules
    "why": np.array([["", "", ""], ["", "expected value not above the minimum", "contact cap reached"],
                     ["cooldown", "segment", "contact cap reached"]], dtype=object),
    "eligible": np.array([[True, True, True], [True, False, False], [False, False, False]]),
    "expected_value": np.array([[1.0, 3.0, 2.0], [0.5, np.nan, np.nan], [np.nan] * 3]),
    "propensity": np.array([[0.9, 0.1, 0.5], [0.2, 0.6, 0.9], [0.3, 0.3, 0.3]]),
}


def test_the_action_list_ends_with_no_offer_and_maps_the_log():
    actions = action_list(["a", "b"], ["b", "c"])
    assert actions == ["a", "b", "c", NO_OFFER]
    assert action_index(["c", None, "a", float("nan")], actions).tolist() == [2, 3, 0, 3]
    with pytest.raises(ValueError, match="zz"):
        action_index(["a", "zz"], actions)


def test_each_picker_chooses_among_what_the_engine_could_present():
    assert by_expected_value(RESULT).tolist() == [1, 0, -1]
    # customer 1: only offer a is eligible (b misses the minimum expected value, c is capped)
    assert by_propensity(RESULT).tolist() == [0, 0, -1]
    assert by_popularity(RESULT, np.array([0.1, 0.2, 0.7])).tolist() == [2, 0, -1]


def test_the_logging_support_is_what_its_arms_could_present():
    eligible = RESULT["eligible"]
    # exploration on: any eligible offer; control on: nothing too; nothing eligible: nothing only
    s = logging_support(eligible, [0, 1, 2], 4, control_share=0.2, exploration_share=0.1, top=np.array([1, 0, -1]))
    assert s.tolist() == [[True, True, True, True], [True, False, False, True], [False, False, False, True]]
    # no exploration, no control: only the policy's top
    s = logging_support(eligible, [0, 1, 2], 4, control_share=0.0, exploration_share=0.0, top=np.array([1, 0, -1]))
    assert s.tolist() == [[False, True, False, False], [True, False, False, False], [False, False, False, True]]
    # a candidate putting half its mass on an unsupported action in one round of two: 25 %
    dist = np.array([[0.5, 0.5, 0, 0], [1.0, 0, 0, 0]])
    assert unsupported_share(dist, s[:2]) == pytest.approx(0.25)


def test_distributions_put_each_choice_on_its_action_column():
    # the catalog's offers sit at action columns 2, 0, 1 of a 4-action list (no offer last)
    dist = one_hot(np.array([1, -1, 2]), [2, 0, 1], 4)
    assert dist.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    u = uniform(np.array([[True, True, False], [False, False, False]]), [0, 1, 2], 4)
    assert u.tolist() == [[0.5, 0.5, 0, 0], [0, 0, 0, 1]]
    assert nothing(2, 3).tolist() == [[0, 0, 1], [0, 0, 1]]


def test_popularity_is_the_share_of_recent_buyers_of_each_offers_category():
    days = np.array([[10.0, np.nan], [100.0, 5.0], [91.0, 200.0], [np.nan, np.nan]])
    # grocery: 10 and 91 are within 91 days -> 2 of 4; dairy: only 5 -> 1 of 4; no category: 0
    assert popularity(days, ["grocery", "dairy"], ["dairy", "grocery", None]).tolist() == [0.25, 0.5, 0.0]


def test_the_reward_model_is_cross_fitted():
    action = np.array([0, 0, 1, 0, 1, 1])
    reward = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    fold = np.array([0, 0, 0, 1, 1, 1])
    q = cross_fitted_means(action, reward, fold, 3)
    # fold 0 reads fold 1: action 0 -> 1/1, action 1 -> 0/2, action 2 unseen -> fold 1's mean 1/3
    assert q[0].tolist() == pytest.approx([1.0, 0.0, 1 / 3])
    # fold 1 reads fold 0: action 0 -> 1/2, action 1 -> 1/1, action 2 -> 2/3
    assert q[5].tolist() == pytest.approx([0.5, 1.0, 2 / 3])
    assert (fold_of(["c1", "c2", "c1"]) == fold_of(["c1", "c2", "c1"])).all()
    assert fold_of(["c1"])[0] == fold_of(["c9", "c1"])[1]


def test_rounds_are_first_decisions_and_rewards_fall_in_the_horizon():
    day = 86_400_000_000
    decisions = pd.DataFrame({"decision_id": ["d1", "d2", "d3", "d4"], "customer_id": ["a", "a", "b", "c"],
                              "decided_us": [5 * day, 2 * day, 3 * day, 3 * day]})
    rounds = first_decisions(decisions)
    assert rounds["decision_id"].tolist() == ["d2", "d3", "d4"]  # a's first is d2 (day 2)
    outcomes = pd.DataFrame({
        "customer_id": ["a", "a", "b", "c"], "type": ["convert", "convert", "impression", "convert"],
        # a converts on day 4 (inside 2 + 3) and day 9 (outside); b only saw it; c converts at the decision time
        "occurred_us": [4 * day, 9 * day, 4 * day, 3 * day], "value": [10.0, 99.0, None, 7.0]})
    assert rewards(rounds, outcomes, horizon_days=3, reward="convert").tolist() == [1.0, 0.0, 0.0]
    assert rewards(rounds, outcomes, horizon_days=7, reward="value").tolist() == [109.0, 0.0, 0.0]


def test_the_window_is_two_dates_to_exclusive():
    assert parse_window("2025-07-01..2025-08-01") == (date(2025, 7, 1), date(2025, 8, 1))
    for bad in ("2025-07-01", "2025-07-01..x", "2025-08-01..2025-07-01"):
        with pytest.raises(OPEError):
            parse_window(bad)
