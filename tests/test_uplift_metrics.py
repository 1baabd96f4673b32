"""training.uplift.metrics: a hand-computed ten-row log, then equality with scikit-uplift."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import sklift.metrics as sk

from training.uplift.metrics import auuc, qini_coefficient, qini_curve, qini_frame, uplift_at_k, uplift_curve

# sklift 0.5.1 calls sklearn's stable_cumsum, deprecated since scikit-learn 1.8
pytestmark = pytest.mark.filterwarnings("ignore:Function stable_cumsum is deprecated:FutureWarning")

# Ten rows in order of predicted uplift; rows 4 and 5 tie at 0.5 (one group on the curves).
#              r1   r2   r3   r4   r5   r6   r7   r8   r9   r10
UPLIFT = [0.9, 0.8, 0.7, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
T = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0]
Y = [1, 0, 1, 0, 1, 0, 0, 1, 1, 0]
# Cumulative counts at each group end n: treated n_t (responses r_t), control n_c (responses r_c)
#   n    1  2  3  5  6  7  8  9  10
#   n_t  1  1  2  3  3  4  4  5  5
#   r_t  1  1  2  2  2  2  2  3  3
#   n_c  0  1  1  2  3  3  4  4  5
#   r_c  0  0  0  1  1  1  2  2  2
X = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
# Q = r_t - r_c * n_t / n_c: 1, 1, 2, 2 - 3/2, 2 - 1, 2 - 4/3, 2 - 2, 3 - 10/4, 3 - 2
QINI = [0, 1, 1, 2, 0.5, 1, 2 / 3, 0, 0.5, 1]
# U = (r_t/n_t - r_c/n_c) * n: 1, 2, 3, (2/3 - 1/2) * 5, (2/3 - 1/3) * 6, (1/2 - 1/3) * 7, 0, (3/5 - 1/2) * 9, 2
UPLIFT_VALUES = [0, 1, 2, 3, 5 / 6, 2, 7 / 6, 0, 0.9, 2]


def test_curves_golden():
    x, q = qini_curve(Y, UPLIFT, T)
    assert x.tolist() == X
    assert q == pytest.approx(QINI)
    x, u = uplift_curve(Y, UPLIFT, T)
    assert x.tolist() == X
    assert u == pytest.approx(UPLIFT_VALUES)


def test_qini_coefficient_golden():
    # area under Q (trapezoids): .5 + 1 + 1.5 + 2.5 + .75 + 5/6 + 1/3 + .25 + .75 = 101/12
    # random line to (10, 1): 10 * 1 / 2 = 5, so the model is 101/12 - 5 = 41/12 above it.
    # Perfect (negative effects shown): score y*t - y*(1-t) puts the 3 treated responders first,
    # the 5 non-responders next, the 2 control responders last: points (0,0) (3,3) (8,3) (10,1),
    # area 4.5 + 15 + 4 = 23.5, 18.5 above random.
    assert qini_coefficient(Y, UPLIFT, T) == pytest.approx((41 / 12) / 18.5)
    # Perfect without negative effects: (0,0) (1,1) (10,1), area .5 + 9 = 9.5, 4.5 above random.
    assert qini_coefficient(Y, UPLIFT, T, negative_effect=False) == pytest.approx((41 / 12) / 4.5)


def test_auuc_golden():
    # area under U: .5 + 1.5 + 2.5 + 23/6 + 17/12 + 19/12 + 7/12 + .45 + 1.45 = 829/60;
    # random line to (10, 2): 10, so the model is 229/60 above it.
    # Perfect: 2 control responders, not more than the 2 treated non-responders, so the score is
    # 2*(y == t) + t: treated responders (3), control non-responders (2), treated non-responders
    # (1), control responders (0): points (0,0) (3,3) (6,6) (8,4.8) (10,2), area
    # 4.5 + 13.5 + 10.8 + 6.8 = 35.6, 25.6 above random.
    assert auuc(Y, UPLIFT, T) == pytest.approx((229 / 60) / 25.6)


@pytest.mark.parametrize(
    ("k", "strategy", "expected"),
    [
        # top 3 rows r1 r2 r3: treated 2/2, control 0/1
        pytest.param(0.3, "overall", 1.0, id="overall-top3"),
        # top 4: the tie r4/r5 is broken like sklift (later row first), so r5 (control, y=1)
        # comes in: treated 2/2, control 1/2
        pytest.param(0.4, "overall", 0.5, id="overall-top4-tie"),
        # top 5 r1..r5: treated 2/3, control 1/2
        pytest.param(0.5, "overall", 2 / 3 - 1 / 2, id="overall-top5"),
        # the whole log: 3/5 - 2/5
        pytest.param(1.0, "overall", 0.2, id="overall-all"),
        # first 2 of 5 treated (r1 r3): 1; first 2 of 5 control (r2, then r5 before r4's group): 1/2
        pytest.param(0.4, "by_group", 0.5, id="by-group-40pct"),
    ],
)
def test_uplift_at_k_golden(k, strategy, expected):
    assert uplift_at_k(Y, UPLIFT, T, k, strategy) == pytest.approx(expected)


def test_uplift_at_k_nan_when_the_top_holds_one_group():
    assert math.isnan(uplift_at_k(Y, UPLIFT, T, 0.1))  # r1 alone: no control row to compare with


def test_qini_frame_golden():
    frame = qini_frame(Y, UPLIFT, T, points=11)
    assert list(frame.columns) == ["share_targeted", "qini", "random"]
    assert frame["share_targeted"].to_numpy() == pytest.approx(np.linspace(0, 1, 11))
    # the curve at 0 .. 10 rows; 4 rows lies between (3, 2) and (5, .5): 1.25
    assert frame["qini"].to_numpy() == pytest.approx([0, 1, 1, 2, 1.25, 0.5, 1, 2 / 3, 0, 0.5, 1])
    assert frame["random"].to_numpy() == pytest.approx(np.linspace(0, 1, 11))


def test_row_order_does_not_change_curves_or_coefficients():
    perm = np.random.default_rng(3).permutation(len(Y))
    y, u, t = np.array(Y)[perm], np.array(UPLIFT)[perm], np.array(T)[perm]
    assert qini_curve(y, u, t)[1] == pytest.approx(QINI)
    assert uplift_curve(y, u, t)[1] == pytest.approx(UPLIFT_VALUES)
    assert qini_coefficient(y, u, t) == pytest.approx(qini_coefficient(Y, UPLIFT, T))
    assert auuc(y, u, t) == pytest.approx(auuc(Y, UPLIFT, T))


def test_inputs_are_not_mutated_and_pandas_is_accepted():
    frame = pd.DataFrame({"y": Y, "u": UPLIFT, "t": T})
    before = frame.copy()
    assert qini_coefficient(frame["y"], frame["u"], frame["t"]) == pytest.approx(qini_coefficient(Y, UPLIFT, T))
    auuc(frame["y"], frame["u"], frame["t"])
    uplift_at_k(frame["y"], frame["u"], frame["t"], 0.4)
    pd.testing.assert_frame_equal(frame, before)


def _problem(seed: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random log of a few hundred rows and a noisy predicted uplift."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 600))
    x = rng.normal(size=n)
    share_treated = 0.15 if kind == "unbalanced" else 0.5
    t = (rng.random(n) < share_treated).astype(int)
    effect = -0.15 if kind == "negative" else 0.1 * np.sign(x)
    p = np.clip(0.3 + effect * t, 0, 1)
    y = (rng.random(n) < p).astype(int)
    uplift = x + rng.normal(scale=0.5, size=n)
    if kind == "ties":
        uplift = np.round(uplift)  # about 7 distinct values
    return y, uplift, t


PROBLEMS = [pytest.param(seed, kind, id=f"{kind}-{seed}")
            for kind in ("ties", "negative", "unbalanced", "plain") for seed in range(4)]


@pytest.mark.parametrize(("seed", "kind"), PROBLEMS)
def test_curves_equal_sklift(seed, kind):
    y, u, t = _problem(seed, kind)
    for ours, theirs in ((qini_curve, sk.qini_curve), (uplift_curve, sk.uplift_curve)):
        x, values = ours(y, u, t)
        x_sk, values_sk = theirs(y, u, t)
        np.testing.assert_array_equal(x, x_sk)
        np.testing.assert_allclose(values, values_sk, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("seed", "kind"), PROBLEMS)
def test_coefficients_equal_sklift(seed, kind):
    y, u, t = _problem(seed, kind)
    assert qini_coefficient(y, u, t) == pytest.approx(sk.qini_auc_score(y, u, t), abs=1e-9)
    assert auuc(y, u, t) == pytest.approx(sk.uplift_auc_score(y, u, t), abs=1e-9)
    if qini_curve(y, u, t)[1][-1] >= 0:
        expected = sk.qini_auc_score(y, u, t, negative_effect=False)
        assert qini_coefficient(y, u, t, negative_effect=False) == pytest.approx(expected, abs=1e-9)
    else:  # sklift fails on its own perfect curve there (x not monotonic); we say why
        with pytest.raises(ValueError, match="negative_effect=False"):
            qini_coefficient(y, u, t, negative_effect=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # sklift's mean of an empty group
@pytest.mark.parametrize(("seed", "kind"), PROBLEMS)
@pytest.mark.parametrize("strategy", ["overall", "by_group"])
def test_uplift_at_k_equals_sklift(seed, kind, strategy):
    y, u, t = _problem(seed, kind)
    for k in (0.05, 0.1, 0.3, 0.5, 0.9):
        ours, theirs = uplift_at_k(y, u, t, k, strategy), sk.uplift_at_k(y, u, t, strategy, k)
        assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-9), k


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: qini_curve([1, 0], [0.1, 0.2, 0.3], [1, 0]), "lengths differ", id="lengths"),
        pytest.param(lambda: uplift_curve([1, 0, 1], [0.1, 0.2, 0.3], [1, 2, 0]), "only 0 .control. and 1",
                     id="treatment-not-binary"),
        pytest.param(lambda: auuc([1, 0, 1], [0.1, 0.2, 0.3], [1, 1, 1]), "no control rows", id="no-control"),
        pytest.param(lambda: qini_coefficient([1, 0, 1], [0.1, 0.2, 0.3], [0, 0, 0]), "no treated rows",
                     id="no-treated"),
        pytest.param(lambda: qini_coefficient([1, 0, 2], [0.1, 0.2, 0.3], [1, 0, 1]), "y must hold only 0 and 1",
                     id="y-not-binary"),
        pytest.param(lambda: qini_curve([1, 0, 1], [0.1, np.nan, 0.3], [1, 0, 1]), "uplift has missing",
                     id="uplift-nan"),
        pytest.param(lambda: uplift_at_k(Y, UPLIFT, T, 0.0), r"k must be a share of rows in \(0, 1\]", id="k-zero"),
        pytest.param(lambda: uplift_at_k(Y, UPLIFT, T, 1.5), r"k must be a share of rows in \(0, 1\]", id="k-big"),
        pytest.param(lambda: uplift_at_k(Y, UPLIFT, T, 0.05), "selects no row", id="k-rounds-to-none"),
        pytest.param(lambda: uplift_at_k(Y, UPLIFT, T, 0.3, "best"), "strategy must be", id="strategy"),
        pytest.param(lambda: qini_frame(Y, UPLIFT, T, points=1), "points must be", id="points"),
    ],
)
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_coefficient_is_nan_when_no_ranking_beats_random():
    # no one responds: every curve is flat at 0, so is the perfect one
    assert math.isnan(qini_coefficient([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0]))
    assert math.isnan(auuc([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0]))


def test_continuous_outcome_curves():
    # Qini of spend: targeting r1 (treated, spent 10) then r2 (control, spent 4) then r3 (treated, 6)
    x, q = qini_curve([10.0, 4.0, 6.0], [3, 2, 1], [1, 0, 1])
    # n=1: 10 - 0; n=2: 10 - 4 * 1/1; n=3: 16 - 4 * 2/1
    assert x.tolist() == [0, 1, 2, 3]
    assert q == pytest.approx([0, 10, 6, 8])
