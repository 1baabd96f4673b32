"""scoring.ope: golden numbers on a hand-built log (derived by hand in the comments), parity with
Open Bandit Pipeline's formulas written out independently from its source, the seeded bootstrap,
unbiasedness on a simulated bandit whose true value is known, the support warnings and the
validation messages."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import check_random_state  # what obp's bootstrap seeds itself with (obp/utils.py l. 78)

from scoring import ope
from scoring.ope import (
    EVALUATION_COLUMNS,
    WARNING_CODES,
    OPEEstimate,
    dm,
    dr,
    estimate,
    evaluate_policies,
    ips,
    round_rewards_dm,
    round_rewards_dr,
    round_rewards_ips,
    round_rewards_snips,
    snips,
)

# --------------------------------------------------------------------------- the hand-built log
# Actions: 0 = no offer (control), 1 = voucher, 2 = upgrade. Six logged decisions:
#
#   round  action  pscore  reward
#     0      0      0.50     0
#     1      1      0.25     1
#     2      2      0.25     0
#     3      1      0.50     1
#     4      0      0.25     1
#     5      2      0.60     1
ACTIONS = ("no offer", "voucher", "upgrade")
REWARD = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
ACTION = np.array([0, 1, 2, 1, 0, 2])
PSCORE = np.array([0.5, 0.25, 0.25, 0.5, 0.25, 0.6])
# a constant reward model: q_hat(x, .) = (0.2, 0.6, 0.4) for every context
Q_HAT = np.tile([0.2, 0.6, 0.4], (6, 1))

# Deterministic candidate: picks 1, 1, 2, 1, 1, 0 (one-hot).
#   w = pi_e(a_i|x_i) / p_i = [0, 1/0.25, 1/0.25, 1/0.5, 0, 0] = [0, 4, 4, 2, 0, 0]; sum 10
#   w r = [0, 4, 0, 2, 0, 0]; sum 6
#   IPS   = 6 / 6 = 1.0
#   SNIPS = 6 / 10 = 0.6
#   DM    = mean q_hat at the picks = (0.6 + 0.6 + 0.4 + 0.6 + 0.6 + 0.2) / 6 = 3.0 / 6 = 0.5
#   r - q_hat(x_i, a_i) = [0 - 0.2, 1 - 0.6, 0 - 0.4, 1 - 0.6, 1 - 0.2, 1 - 0.4]
#                       = [-0.2, 0.4, -0.4, 0.4, 0.8, 0.6]
#   w (r - q_hat) = [0, 1.6, -1.6, 0.8, 0, 0]; sum 0.8
#   DR    = 0.5 + 0.8 / 6 = 0.633333...
#   supported rounds (pi_e > 0 on the logged action): 1, 2, 3 -> 3; ESS = 10^2 / (16 + 16 + 4) = 100 / 36
PICKS = np.array([1, 1, 2, 1, 1, 0])
DETERMINISTIC = np.eye(3)[PICKS]

# Stochastic candidate: (0.2, 0.5, 0.3) in every context.
#   w = [0.2/0.5, 0.5/0.25, 0.3/0.25, 0.5/0.5, 0.2/0.25, 0.3/0.6] = [0.4, 2, 1.2, 1, 0.8, 0.5]; sum 5.9
#   w r = [0, 2, 0, 1, 0.8, 0.5]; sum 4.3
#   IPS   = 4.3 / 6 = 0.716667
#   SNIPS = 4.3 / 5.9 = 0.728814
#   DM    = 0.2 * 0.2 + 0.5 * 0.6 + 0.3 * 0.4 = 0.04 + 0.30 + 0.12 = 0.46 in every round
#   w (r - q_hat) = [0.4 * -0.2, 2 * 0.4, 1.2 * -0.4, 1 * 0.4, 0.8 * 0.8, 0.5 * 0.6]
#                 = [-0.08, 0.8, -0.48, 0.4, 0.64, 0.3]; sum 1.58
#   DR    = 0.46 + 1.58 / 6 = 0.723333...
#   supported: all 6; ESS = 5.9^2 / (0.16 + 4 + 1.44 + 1 + 0.64 + 0.25) = 34.81 / 7.49
STOCHASTIC = np.tile([0.2, 0.5, 0.3], (6, 1))

GOLDEN = {
    "deterministic": (DETERMINISTIC, {"ips": 1.0, "snips": 0.6, "dm": 0.5, "dr": 0.5 + 0.8 / 6},
                      {"n_supported": 3, "ess": 100 / 36, "max_weight": 4.0}),
    "stochastic": (STOCHASTIC, {"ips": 4.3 / 6, "snips": 4.3 / 5.9, "dm": 0.46, "dr": 0.46 + 1.58 / 6},
                   {"n_supported": 6, "ess": 34.81 / 7.49, "max_weight": 2.0}),
}


@pytest.mark.parametrize("candidate", GOLDEN, ids=list(GOLDEN))
def test_golden_values_on_the_hand_built_log(candidate):
    pi, expected, _ = GOLDEN[candidate]
    assert ips(REWARD, ACTION, PSCORE, pi) == pytest.approx(expected["ips"])
    assert snips(REWARD, ACTION, PSCORE, pi) == pytest.approx(expected["snips"])
    assert dm(pi, Q_HAT) == pytest.approx(expected["dm"])
    assert dr(REWARD, ACTION, PSCORE, pi, Q_HAT) == pytest.approx(expected["dr"])
    for method, value in expected.items():
        e = estimate(method, REWARD, ACTION, PSCORE, pi, Q_HAT, n_bootstrap=0)
        assert e.value == pytest.approx(value)


def test_golden_round_rewards():
    # deterministic candidate: w r = [0, 4, 0, 2, 0, 0]; SNIPS divides by mean(w) = 10 / 6
    assert round_rewards_ips(REWARD, ACTION, PSCORE, DETERMINISTIC) == pytest.approx([0, 4, 0, 2, 0, 0])
    assert round_rewards_snips(REWARD, ACTION, PSCORE, DETERMINISTIC) == pytest.approx(
        [0, 4 * 0.6, 0, 2 * 0.6, 0, 0])
    assert round_rewards_dm(DETERMINISTIC, Q_HAT) == pytest.approx([0.6, 0.6, 0.4, 0.6, 0.6, 0.2])
    # DM term + w (r - q_hat): [0.6 + 0, 0.6 + 1.6, 0.4 - 1.6, 0.6 + 0.8, 0.6 + 0, 0.2 + 0]
    assert round_rewards_dr(REWARD, ACTION, PSCORE, DETERMINISTIC, Q_HAT) == pytest.approx(
        [0.6, 2.2, -1.2, 1.4, 0.6, 0.2])


@pytest.mark.parametrize("candidate", GOLDEN, ids=list(GOLDEN))
def test_golden_support_columns(candidate):
    pi, _, support = GOLDEN[candidate]
    e = estimate("ips", REWARD, ACTION, PSCORE, pi, n_bootstrap=0)
    assert e.n_logged == 6
    assert e.n_supported == support["n_supported"]
    assert e.effective_sample_size == pytest.approx(support["ess"])
    assert e.max_weight == pytest.approx(support["max_weight"])
    assert math.isnan(e.ci_low) and math.isnan(e.ci_high)  # n_bootstrap=0: no interval


def test_dm_reads_no_reward():
    flipped = estimate("dm", 1 - REWARD, ACTION, PSCORE, STOCHASTIC, Q_HAT, n_bootstrap=0)
    assert flipped.value == pytest.approx(0.46)


# --------------------------------------------------------------------------- parity with obp's source
# obp 0.5.5, obp/ope/estimators.py (tag 0.5.5, commit 456a1ea6), each ``_estimate_round_rewards``
# written out with obp's 3-D arrays (n, K, len_list=1) and position 0, as in its source:
def _obp_round_rewards(reward, action, pscore, pi, q):
    n = len(action)
    position = np.zeros(n, dtype=int)  # l. 331-332: position None -> zeros
    action_dist, q3 = pi[:, :, None], q[:, :, None]
    iw = action_dist[np.arange(n), action, position] / pscore  # l. 334 (IPW), 655 (SNIPW), 981 (DR)
    q_hat_at_position = q3[np.arange(n), :, position]  # l. 735
    pi_e_at_position = action_dist[np.arange(n), :, position]  # l. 736
    dm_ = np.average(q_hat_at_position, weights=pi_e_at_position, axis=1)  # l. 737-741
    return {
        "ips": reward * iw,  # l. 338
        "snips": reward * iw / iw.mean(),  # l. 656
        "dm": dm_,
        "dr": dm_ + iw * (reward - q3[np.arange(n), action, position]),  # l. 987-994
    }


# obp/utils.py l. 77-82, estimate_confidence_interval_by_bootstrap, as written there
def _obp_bootstrap(samples, alpha, n_bootstrap_samples, random_state):
    boot_samples = []
    random_ = check_random_state(random_state)
    for _ in np.arange(n_bootstrap_samples):
        boot_samples.append(np.mean(random_.choice(samples, size=samples.shape[0])))
    lower_bound = np.percentile(boot_samples, 100 * (alpha / 2))
    upper_bound = np.percentile(boot_samples, 100 * (1.0 - alpha / 2))
    return lower_bound, upper_bound


# our one departure: SNIPS normalised within each resample (same draws as obp's loop)
def _ratio_bootstrap(numerators, denominators, alpha, n_bootstrap_samples, random_state):
    random_ = check_random_state(random_state)
    n = len(numerators)
    boot = []
    for _ in range(n_bootstrap_samples):
        idx = random_.choice(n, size=n)
        boot.append(numerators[idx].sum() / denominators[idx].sum())
    return np.percentile(boot, 100 * (alpha / 2)), np.percentile(boot, 100 * (1.0 - alpha / 2))


def _random_log(seed, n=400, k=4, deterministic=False):
    rng = np.random.default_rng(seed)
    action = rng.integers(0, k, n)
    pscore = rng.uniform(0.05, 1.0, n)
    reward = rng.binomial(1, 0.3, n).astype(float) * rng.uniform(1, 50, n)  # a money value, zero-inflated
    pi = np.eye(k)[rng.integers(0, k, n)] if deterministic else rng.dirichlet(np.ones(k), n)
    q = rng.uniform(0, 20, (n, k))
    return reward, action, pscore, pi, q


@pytest.mark.parametrize("seed, deterministic", [(1, False), (2, True), (3, False)],
                         ids=["stochastic-1", "deterministic-2", "stochastic-3"])
def test_matches_obp_formulas_on_random_logs(seed, deterministic):
    reward, action, pscore, pi, q = _random_log(seed, deterministic=deterministic)
    obp = _obp_round_rewards(reward, action, pscore, pi, q)
    ours = {"ips": round_rewards_ips(reward, action, pscore, pi),
            "snips": round_rewards_snips(reward, action, pscore, pi),
            "dm": round_rewards_dm(pi, q), "dr": round_rewards_dr(reward, action, pscore, pi, q)}
    for method in obp:
        np.testing.assert_allclose(ours[method], obp[method], rtol=1e-13, atol=1e-13, err_msg=method)
        # estimate_policy_value is the mean of the round rewards (l. 407, 788, 1075)
        e = estimate(method, reward, action, pscore, pi, q, n_bootstrap=0)
        assert e.value == pytest.approx(obp[method].mean(), rel=1e-12)


@pytest.mark.parametrize("method", ["ips", "dm", "dr"])
def test_bootstrap_interval_equals_obps_for_the_same_seed(method):
    reward, action, pscore, pi, q = _random_log(4)
    samples = _obp_round_rewards(reward, action, pscore, pi, q)[method]
    low, high = _obp_bootstrap(samples, alpha=0.1, n_bootstrap_samples=300, random_state=12)
    e = estimate(method, reward, action, pscore, pi, q, n_bootstrap=300, alpha=0.1, random_state=12)
    assert (e.ci_low, e.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_bootstrap_blocks_do_not_change_the_draws(monkeypatch):
    # 400 rounds and a block of 1000 indices: 2 resamples per block, 150 blocks, the same stream
    reward, action, pscore, pi, q = _random_log(6)
    whole = estimate("dr", reward, action, pscore, pi, q, n_bootstrap=300, random_state=1)
    monkeypatch.setattr(ope, "_BOOTSTRAP_BLOCK", 1000)
    blocked = estimate("dr", reward, action, pscore, pi, q, n_bootstrap=300, random_state=1)
    assert (blocked.ci_low, blocked.ci_high) == pytest.approx((whole.ci_low, whole.ci_high), rel=1e-12)
    low, high = _obp_bootstrap(_obp_round_rewards(reward, action, pscore, pi, q)["dr"], 0.05, 300, 1)
    assert (blocked.ci_low, blocked.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_snips_interval_renormalises_each_resample():
    reward, action, pscore, pi, _ = _random_log(5)
    w = pi[np.arange(len(action)), action] / pscore
    low, high = _ratio_bootstrap(reward * w, w, alpha=0.05, n_bootstrap_samples=300, random_state=7)
    e = estimate("snips", reward, action, pscore, pi, n_bootstrap=300, random_state=7)
    assert (e.ci_low, e.ci_high) == pytest.approx((low, high), rel=1e-12)


# --------------------------------------------------------------------------- the bootstrap
def _uniform_log(n, seed):
    rng = np.random.default_rng(seed)
    k = 3
    action = rng.integers(0, k, n)
    reward = rng.binomial(1, np.array([0.1, 0.3, 0.2])[action]).astype(float)
    return reward, action, np.full(n, 1 / k), np.eye(k)[np.full(n, 1)]  # candidate: always action 1


@pytest.mark.parametrize("method", ["ips", "snips"])
def test_bootstrap_is_seeded_contains_the_estimate_and_narrows_with_data(method):
    small = _uniform_log(600, seed=1)
    a = estimate(method, *small, random_state=3)
    assert estimate(method, *small, random_state=3) == a  # same seed, same interval
    other = estimate(method, *small, random_state=4)
    assert (other.ci_low, other.ci_high) != (a.ci_low, a.ci_high)
    assert a.ci_low < a.value < a.ci_high
    big = estimate(method, *_uniform_log(9600, seed=1), random_state=3)
    assert big.ci_low < big.value < big.ci_high
    # 16 times the data: the width shrinks by about sqrt(16) = 4; ask for at least half of that
    assert big.ci_high - big.ci_low < (a.ci_high - a.ci_low) / 2


def test_evaluate_policies_rows_equal_single_estimates():
    table = evaluate_policies(REWARD, ACTION, PSCORE, {"det": DETERMINISTIC, "stoch": STOCHASTIC},
                              q_hat=Q_HAT, actions=ACTIONS, n_bootstrap=200, random_state=9)
    assert list(table.columns) == list(EVALUATION_COLUMNS)
    assert list(zip(table["candidate"], table["method"], strict=True)) == [
        ("det", "ips"), ("det", "snips"), ("det", "dr"),
        ("stoch", "ips"), ("stoch", "snips"), ("stoch", "dr")]
    for row in table.itertuples():
        pi = DETERMINISTIC if row.candidate == "det" else STOCHASTIC
        e = estimate(row.method, REWARD, ACTION, PSCORE, pi, Q_HAT, actions=ACTIONS, n_bootstrap=200,
                     random_state=9)
        assert (row.value, row.ci_low, row.ci_high) == pytest.approx((e.value, e.ci_low, e.ci_high),
                                                                     rel=1e-12)
        assert (row.n_supported, row.effective_sample_size) == (e.n_supported, e.effective_sample_size)
        assert row.warning_codes == ", ".join(e.warning_codes) and row.warnings == " | ".join(e.warnings)
    assert table.loc[0, "value"] == pytest.approx(1.0)  # det / ips, from the golden comments


def test_evaluate_policies_without_a_model_runs_ips_and_snips():
    table = evaluate_policies(REWARD, ACTION, PSCORE, {"det": DETERMINISTIC}, n_bootstrap=10)
    assert list(table["method"]) == ["ips", "snips"]
    table = evaluate_policies(REWARD, ACTION, PSCORE, {"det": DETERMINISTIC}, q_hat=Q_HAT,
                              methods=["dm", "dr"], n_bootstrap=10)
    assert table["value"].tolist() == pytest.approx([0.5, 0.5 + 0.8 / 6])


# --------------------------------------------------------------------------- unbiasedness
# A simulated bandit with 4 context types (equally likely) and 3 actions; the true conversion rate
# q(x, a) and the logging policy pi_b(a | x) are known, so the candidate's true value is
# V = (1/4) sum_x sum_a pi_e(a|x) q(x, a).
Q_TRUE = np.array([[0.05, 0.20, 0.10],
                   [0.30, 0.10, 0.15],
                   [0.10, 0.10, 0.40],
                   [0.25, 0.35, 0.05]])
PI_B = np.array([[0.6, 0.2, 0.2],
                 [0.2, 0.6, 0.2],
                 [0.1, 0.3, 0.6],
                 [0.5, 0.4, 0.1]])
CANDIDATES = {"deterministic": np.eye(3)[[1, 0, 2, 1]],  # the best action of each context type
              "stochastic": np.array([[0.1, 0.8, 0.1], [0.7, 0.1, 0.2], [0.2, 0.2, 0.6], [0.3, 0.6, 0.1]])}


def _simulate(seed, n, pi_e_table):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, n)
    u = rng.random(n)[:, None]
    action = (u > PI_B[x].cumsum(axis=1)).sum(axis=1)  # a ~ pi_b(. | x)
    reward = (rng.random(n) < Q_TRUE[x, action]).astype(float)
    return reward, action, PI_B[x, action], pi_e_table[x], x


@pytest.mark.parametrize("candidate", CANDIDATES, ids=list(CANDIDATES))
def test_ips_and_dr_are_unbiased_and_snips_close_on_a_simulated_bandit(candidate):
    pi_e = CANDIDATES[candidate]
    truth = float((pi_e * Q_TRUE).sum(axis=1).mean())
    q_wrong = np.clip(Q_TRUE + 0.15, 0, 1)  # a reward model off by +0.15 everywhere
    n, seeds = 1000, 300
    est = {m: [] for m in ("ips", "snips", "dr", "dm")}
    for seed in range(seeds):
        reward, action, pscore, pi, x = _simulate(seed, n, pi_e)
        est["ips"].append(ips(reward, action, pscore, pi))
        est["snips"].append(snips(reward, action, pscore, pi))
        est["dr"].append(dr(reward, action, pscore, pi, q_wrong[x]))
        est["dm"].append(dm(pi, q_wrong[x]))
    mean = {m: float(np.mean(v)) for m, v in est.items()}
    se = {m: float(np.std(v, ddof=1) / math.sqrt(seeds)) for m, v in est.items()}
    # Unbiased: the mean over 300 independent seeds is normal around the truth with standard error
    # se (CLT), so |mean - truth| < 4 se fails by chance with probability 6e-5 (and the seeds are
    # fixed, so the test is deterministic). se < 0.003 keeps the test sharp: a bias of 0.012 would fail.
    for m in ("ips", "dr"):
        assert se[m] < 0.003, (m, se[m])
        assert abs(mean[m] - truth) < 4 * se[m], (m, mean[m], truth, se[m])
    # DR stays unbiased with a wrong model (the residual term corrects it) where DM does not:
    assert mean["dm"] - truth == pytest.approx(0.15, abs=0.01)
    # SNIPS is biased by O(1/n); the delta method gives the bias of mean(w r) / mean(w), with E[w] = 1,
    # as (V Var(w) - Cov(w r, w)) / n = (V (E[w^2] - 1) - (E[w^2 q] - V)) / n, E over x and a ~ pi_b.
    w2 = pi_e**2 / PI_B  # E[w^2 | x] = sum_a pi_e^2 / pi_b
    bias = (truth * (w2.sum(axis=1).mean() - 1) - ((w2 * Q_TRUE).sum(axis=1).mean() - truth)) / n
    assert abs(bias) < 0.001
    assert abs(mean["snips"] - truth - bias) < 4 * se["snips"], (mean["snips"], truth, bias, se["snips"])


# --------------------------------------------------------------------------- support warnings
def test_support_warning_for_a_never_logged_offer():
    # the log tried only "no offer" and "voucher"; the candidate picks "upgrade" in rounds 0 and 3
    action = np.array([0, 1, 0, 1, 1, 0])
    pi = np.eye(3)[[2, 1, 0, 2, 1, 1]]
    # positive probability on the logged action: rounds 1, 2, 4 (round 5 picks 1, logged 0)
    e = estimate("ips", REWARD, action, PSCORE, pi, actions=ACTIONS, n_bootstrap=0, min_support=3)
    assert e.n_supported == 3
    assert "low_support" in e.warning_codes
    message = e.warnings[e.warning_codes.index("low_support")]
    # picks: voucher (3 logged) and upgrade (0 logged) and no offer (3 logged): only upgrade is under 3
    assert message.startswith("the candidate picks actions the log rarely explored: 1 of 3 offers it "
                              "chooses have fewer than 3 logged decisions (offers: upgrade (0 logged)); "
                              "they carry 33% of its choices")


def test_support_warning_lists_rare_offers_fewest_first():
    action = np.array([0, 0, 0, 1, 1, 2])  # no offer 3 logged, voucher 2, upgrade 1
    e = estimate("ips", REWARD, action, PSCORE, STOCHASTIC, actions=ACTIONS, n_bootstrap=0)  # min_support=30
    message = e.warnings[e.warning_codes.index("low_support")]
    assert "3 of 3 offers it chooses have fewer than 30 logged decisions" in message
    assert "(offers: upgrade (1 logged), voucher (2 logged), no offer (3 logged))" in message
    assert "they carry 100% of its choices" in message
    # eight offers, all rare: five are named, the rest counted; unnamed actions are "action <index>"
    e = estimate("ips", REWARD, np.arange(6), PSCORE, np.full((6, 8), 1 / 8), n_bootstrap=0)
    assert ("8 of 8 offers it chooses have fewer than 30 logged decisions (offers: action 6 (0 logged), "
            "action 7 (0 logged), action 0 (1 logged), action 1 (1 logged), action 2 (1 logged), and 3 more)"
            ) in e.warnings[e.warning_codes.index("low_support")]


def test_no_support_and_low_ess():
    # a candidate that always picks "upgrade" on a log that never showed it
    action = np.array([0, 1, 0, 1, 1, 0])
    never = np.eye(3)[np.full(6, 2)]
    e = estimate("snips", REWARD, action, PSCORE, never, n_bootstrap=50)
    assert e.n_supported == 0 and e.effective_sample_size == 0
    assert math.isnan(e.value) and math.isnan(e.ci_low)  # SNIPS has no value without weight
    assert e.warning_codes == ("no_support", "low_support")
    assert estimate("ips", REWARD, action, PSCORE, never, n_bootstrap=0).value == 0
    # the golden deterministic candidate: ESS 100 / 36 = 2.8
    e = estimate("ips", REWARD, ACTION, PSCORE, DETERMINISTIC, n_bootstrap=0)
    assert e.warnings[e.warning_codes.index("low_ess")].startswith(
        "effective sample size 3 of 6 logged decisions: the estimate rests on few decisions")


def test_no_exploration_warning():
    e = estimate("ips", REWARD, ACTION, np.ones(6), DETERMINISTIC, n_bootstrap=0)
    assert e.warning_codes[0] == "no_exploration"
    assert e.warnings[0].startswith("every one of the 6 logged decisions had probability 1")


def test_a_well_supported_candidate_has_no_warnings():
    e = estimate("ips", *_uniform_log(3000, seed=2), n_bootstrap=0)  # 1000 per action, ESS about 1000
    assert e.warnings == () and e.warning_codes == ()
    with_ess_share = estimate("ips", *_uniform_log(3000, seed=2), n_bootstrap=0, min_ess_share=0.5)
    assert with_ess_share.warning_codes == ("low_ess",)  # ESS 1000 of 3000 is under half
    assert set(WARNING_CODES) == {"no_exploration", "no_support", "low_support", "low_ess"}


def test_estimate_is_a_frozen_record():
    e = estimate("ips", REWARD, ACTION, PSCORE, DETERMINISTIC, n_bootstrap=0)
    assert isinstance(e, OPEEstimate)
    with pytest.raises(AttributeError):
        e.value = 0.0  # type: ignore[misc]
    assert len(e.warnings) == len(e.warning_codes)


# --------------------------------------------------------------------------- validation
BAD_INPUTS = [
    ("lengths", {"pscore": PSCORE[:5]}, "differ in length: reward has 6 rounds, action 6, pscore 5"),
    ("pscore-0", {"pscore": np.r_[PSCORE[:5], 0.0]},
     r"pscore must be a probability in \(0, 1\], got 0.0 at round 5"),
    ("pscore-above-1", {"pscore": np.r_[1.5, PSCORE[1:]]}, "got 1.5 at round 0"),
    ("pscore-nan", {"pscore": np.r_[np.nan, PSCORE[1:]]}, "got nan at round 0"),
    ("action-too-big", {"action": np.r_[ACTION[:2], 3, ACTION[3:]]},
     "action index 3 at round 2 is out of range: action_dist has 3 actions, so indices run 0..2"),
    ("action-negative", {"action": np.r_[-1, ACTION[1:]]}, "action index -1 at round 0 is out of range"),
    ("action-float", {"action": ACTION.astype(float)}, "action must hold integer indices"),
    ("rows-not-summing", {"action_dist": np.r_[STOCHASTIC[:2], [[0.2, 0.5, 0.2]], STOCHASTIC[3:]]},
     "action_dist rows must sum to 1 .* but row 2 sums to 0.9"),
    ("negative-probability", {"action_dist": np.r_[[[1.2, -0.2, 0.0]], STOCHASTIC[1:]]},
     "action_dist must hold probabilities, got -0.2 at round 0, action 1"),
    ("obp-3d", {"action_dist": STOCHASTIC[:, :, None]}, r"pass action_dist\[:, :, 0\]"),
    ("rows-count", {"action_dist": STOCHASTIC[:5]}, "action_dist has 5 rows but the log has 6 rounds"),
    ("q-hat-shape", {"q_hat": Q_HAT[:, :2]},
     r"q_hat must have the shape of action_dist \(6, 3\).* got \(6, 2\)"),
    ("q-hat-nan", {"q_hat": np.where(np.eye(6, 3) > 0, np.nan, Q_HAT)},
     "q_hat must be finite, got nan at round 0, action 0"),
    ("reward-inf", {"reward": np.r_[np.inf, REWARD[1:]]}, "reward must be finite"),
    ("empty", {"reward": [], "action": np.array([], dtype=int), "pscore": [], "action_dist": np.zeros((0, 3)),
                   "q_hat": np.zeros((0, 3))}, "the log is empty"),
    ("method", {"method": "ipw"}, "method must be one of ips, snips, dm, dr, got 'ipw'"),
    ("dr-without-model", {"q_hat": None}, "method 'dr' needs q_hat"),
    ("alpha", {"alpha": 0.0}, r"alpha must be in \(0, 1\)"),
    ("n-bootstrap", {"n_bootstrap": -1}, "n_bootstrap must be a non-negative integer"),
    ("action-names", {"actions": ("a", "b")}, "actions names 2 actions but action_dist has 3 columns"),
]


@pytest.mark.parametrize("change, message", [(c, m) for _, c, m in BAD_INPUTS],
                         ids=[i for i, _, _ in BAD_INPUTS])
def test_validation_names_the_problem(change, message):
    args = {"method": "dr", "reward": REWARD, "action": ACTION, "pscore": PSCORE, "action_dist": STOCHASTIC,
            "q_hat": Q_HAT, "n_bootstrap": 0} | change
    with pytest.raises(ValueError, match=message):
        estimate(**args)


def test_row_sums_within_tolerance_pass():
    nearly = STOCHASTIC + np.array([1e-7, 0, 0])
    assert ips(REWARD, ACTION, PSCORE, nearly) == pytest.approx(4.3 / 6, rel=1e-6)


def test_evaluate_policies_validation_names_the_candidate():
    with pytest.raises(ValueError, match="candidate 'bad': action_dist rows must sum to 1"):
        evaluate_policies(REWARD, ACTION, PSCORE, {"good": STOCHASTIC, "bad": STOCHASTIC * 0.5},
                          n_bootstrap=0)
    with pytest.raises(ValueError, match="candidate 'wide' has 4 actions but the first candidate has 3"):
        evaluate_policies(REWARD, ACTION, PSCORE, {"good": STOCHASTIC, "wide": np.full((6, 4), 0.25)},
                          n_bootstrap=0)
    with pytest.raises(ValueError, match="no candidates to evaluate"):
        evaluate_policies(REWARD, ACTION, PSCORE, {}, n_bootstrap=0)
    with pytest.raises(ValueError, match="method 'dm' needs q_hat"):
        evaluate_policies(REWARD, ACTION, PSCORE, {"good": STOCHASTIC}, methods=["dm"], n_bootstrap=0)
    table = evaluate_policies(REWARD, ACTION, PSCORE, {"good": STOCHASTIC}, n_bootstrap=0)
    assert isinstance(table, pd.DataFrame) and table["ci_low"].isna().all()
