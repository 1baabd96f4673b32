"""Golden tests for training.metrics on tiny hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    CLASSIFICATION_KEYS,
    REGRESSION_KEYS,
    classification_metrics,
    expected_calibration_error,
    lift_at,
    rank_scores,
    regression_metrics,
)

# Ten rows, scores strictly decreasing, so the ranking is the row order.
Y10 = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0]
S10 = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1, 0.05]


def test_classification_metrics_golden_ten_rows():
    m = classification_metrics(Y10, S10)
    assert tuple(m) == CLASSIFICATION_KEYS
    # AUC: negatives below each positive: 6 (0.9), 5 (0.7), 5 (0.6), 3 (0.3) out of 4 x 6 pairs
    assert m["auc"] == pytest.approx(19 / 24)
    # AP: precision at each positive: 1/1, 2/3, 3/4, 4/7
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    # Brier: squared errors .01 .64 .09 .16 .3025 .16 .49 .04 .01 .0025
    assert m["brier"] == pytest.approx(1.905 / 10)
    # ECE: every row alone in its bin (0.05 -> 0, 0.1 -> 1, ..., 0.3 -> 3, ..., 0.9 -> 9): mean |y - p|
    assert m["ece"] == pytest.approx(3.6 / 10)
    # top 10 % = ceil(1.0) = 1 row (y = 1) over a base rate of 0.4
    assert m["lift_at_10pct"] == pytest.approx(2.5)


def test_ranking_metrics_only_use_order():
    stretched = np.array(S10) * 1000 - 3  # same order, not probabilities
    a, b = classification_metrics(Y10, S10), classification_metrics(Y10, stretched)
    for key in ("auc", "pr_auc", "lift_at_10pct"):
        assert a[key] == pytest.approx(b[key])


def test_scores_outside_unit_interval_give_nan_brier_and_ece():
    s = [2.0, 0.5, -1.0, 0.1]
    m = classification_metrics([1, 0, 1, 0], s)
    assert math.isnan(m["brier"]) and math.isnan(m["ece"])
    # order: 2.0(1) 0.5(0) 0.1(0) -1.0(1): positives beat 2 and 0 negatives
    assert m["auc"] == pytest.approx(2 / 4)
    # a single value just above 1 is enough
    assert math.isnan(classification_metrics([1, 0], [1.0000001, 0.2])["brier"])


def test_infinite_scores_rank_but_are_not_probabilities():
    m = classification_metrics([1, 0, 0, 1], [np.inf, 0.5, -np.inf, 0.7])
    assert m["auc"] == pytest.approx(1.0)
    assert math.isnan(m["brier"]) and math.isnan(m["ece"])


def test_nan_score_ranks_below_every_real_score():
    y = [0, 1, 0, 1]
    s = [np.nan, 0.8, 0.3, 0.1]
    m = classification_metrics(y, s)
    # order 0.8(1) 0.3(0) 0.1(1) NaN(0): 0.8 beats 2 negatives, 0.1 beats the NaN one
    assert m["auc"] == pytest.approx(3 / 4)
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    # the top row is 0.8 (a positive), not the NaN row
    assert m["lift_at_10pct"] == pytest.approx(1 / 0.5)
    assert math.isnan(m["brier"]) and math.isnan(m["ece"])
    assert list(rank_scores(s)) == [1.0, 4.0, 3.0, 2.0]


def test_rank_scores_average_ties_and_nan_below_minus_inf_tie():
    assert list(rank_scores([0.5, 0.5, 0.1, np.nan])) == [3.5, 3.5, 2.0, 1.0]
    # NaN and -inf share the bottom
    assert list(rank_scores([np.nan, -np.inf, 0.0])) == [1.5, 1.5, 3.0]


@pytest.mark.parametrize("y", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_single_class_gives_nan_auc_and_pr_auc(y):
    s = [0.1, 0.4, 0.6, 0.9]
    m = classification_metrics(y, s)
    assert math.isnan(m["auc"]) and math.isnan(m["pr_auc"])
    # probabilities stay judgeable
    expected_brier = float(np.mean((np.array(s) - np.array(y)) ** 2))
    assert m["brier"] == pytest.approx(expected_brier)
    assert m["ece"] == pytest.approx(float(np.mean(np.abs(np.array(s) - np.array(y)))))
    if sum(y) == 0:
        assert math.isnan(m["lift_at_10pct"])  # no positives
    else:
        assert m["lift_at_10pct"] == pytest.approx(1.0)


def test_ece_p_point_three_goes_in_bin_three():
    # bins 2 and 3 apart: |0 - 0.25| and |1 - 0.3| -> (0.25 + 0.7) / 2;
    # both in bin 2 would be |0.5 - 0.275| = 0.225
    assert expected_calibration_error([0, 1], [0.25, 0.3]) == pytest.approx(0.475)
    # the linspace search this replaces does put 0.3 in bin 2
    assert np.searchsorted(np.linspace(0, 1, 11), 0.3, side="right") - 1 == 2


def test_ece_every_tenth_is_the_left_edge_of_its_bin():
    # p = k/10 alone with its bin's neighbour just below the next edge: gap exactly k-specific
    for k in range(1, 10):
        p_edge, p_below = k / 10, np.nextafter(k / 10, 0)
        # same bin -> |0.5 - mean p|; different bins -> (|1 - p_edge| + |0 - p_below|) / 2
        ece = expected_calibration_error([1, 0], [p_edge, p_below])
        assert ece == pytest.approx(((1 - p_edge) + p_below) / 2), k


def test_ece_edges_hold_for_any_number_of_bins():
    # (1/49) * 49 rounds to 0.999...; p = 1/49 is still the left edge of bin 1
    p = [1 / 49, np.nextafter(1 / 49, 0)]
    assert expected_calibration_error([1, 0], p, n_bins=49) == pytest.approx(((1 - p[0]) + p[1]) / 2)
    p = [15 / 22, np.nextafter(15 / 22, 0)]
    assert expected_calibration_error([1, 0], p, n_bins=22) == pytest.approx(((1 - p[0]) + p[1]) / 2)


def test_ece_pools_rows_and_weights_bins_by_share():
    # bin 1: p .1 .12 .15, y 0 0 1 -> |1/3 - 0.123333| = 0.21; bin 9: p .9 .95, y 1 1 -> 0.075
    ece = expected_calibration_error([0, 0, 1, 1, 1], [0.1, 0.12, 0.15, 0.9, 0.95])
    assert ece == pytest.approx((3 * 0.21 + 2 * 0.075) / 5)


def test_ece_p_one_falls_in_last_bin():
    # together in bin 9: |0.5 - 0.975|; a bin of its own would give (1 + 0.05) / 2
    assert expected_calibration_error([0, 1], [1.0, 0.95]) == pytest.approx(0.475)
    assert expected_calibration_error([1], [0.0]) == pytest.approx(1.0)


def test_ece_rejects_non_probabilities_and_bad_bins():
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([0, 1], [0.5, np.nan])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0, 1], [0.5, 0.5], n_bins=0)


def test_lift_ties_keep_row_order_and_fraction_rounds_up():
    y = [0, 1, 1, 0, 0]
    assert lift_at(y, [0.5] * 5, 0.1) == pytest.approx(0.0)  # top = row 0
    assert lift_at(y[::-1], [0.5] * 5, 0.1) == pytest.approx(0.0)  # top = row 0 again (y 0)
    assert lift_at([1, 0, 0, 0, 1], [0.5] * 5, 0.1) == pytest.approx(1 / 0.4)
    # 30 rows, 10 % -> exactly 3 rows despite 0.1 * 30 = 3.0000000000000004
    y30 = [1, 1, 1, 0] + [0] * 26
    s30 = np.linspace(1, 0, 30)
    assert lift_at(y30, s30, 0.1) == pytest.approx((3 / 3) / (3 / 30))
    # 11 rows, 10 % -> ceil(1.1) = 2 rows
    assert lift_at([1, 0] + [0] * 8 + [1], np.linspace(1, 0, 11), 0.1) == pytest.approx((1 / 2) / (2 / 11))
    with pytest.raises(ValueError, match="fraction"):
        lift_at(y, [0.5] * 5, 0.0)


def test_regression_metrics_golden():
    m = regression_metrics([1, 2, 3, 4], [1, 3, 5, 4])
    assert tuple(m) == REGRESSION_KEYS
    assert m["mae"] == pytest.approx(3 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 4))


@pytest.mark.parametrize("pred", [[1.0, np.nan], [1.0, np.inf]])
def test_regression_rejects_missing_predictions(pred):
    with pytest.raises(ValueError, match="y_pred has missing or infinite"):
        regression_metrics([1.0, 2.0], pred)


def test_length_mismatch_and_missing_labels_raise():
    with pytest.raises(ValueError, match="y_true has 3 rows but score has 2"):
        classification_metrics([0, 1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="y_true has 2 rows but y_pred has 3"):
        regression_metrics([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="y_true has missing values"):
        classification_metrics([0, np.nan], [0.2, 0.3])
    with pytest.raises(ValueError, match="y_true has missing values"):
        regression_metrics([1.0, None], [1.0, 2.0])
    with pytest.raises(ValueError, match="no rows"):
        classification_metrics([], [])


def test_labels_must_be_binary_and_vectors_one_dimensional():
    with pytest.raises(ValueError, match="only 0 and 1"):
        classification_metrics([0, 2], [0.2, 0.3])
    assert classification_metrics([True, False], [0.9, 0.1])["auc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one-dimensional"):
        classification_metrics([[0, 1]], [[0.2, 0.3]])
