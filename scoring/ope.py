"""Off-policy evaluation (OPE): what a candidate next-best-offer policy would have earned, read
from the decision log of the policy that actually ran.

Each logged decision ``i`` has the action presented ``a_i`` (an integer index ``0..K-1`` into the
action list, "no offer" included as one of the actions), its pscore ``p_i`` (the probability that
the logging policy chose ``a_i``, ``scoring.arms.pscores``) and a reward ``r_i`` (conversion 0/1
or a money value). A candidate gives, for every logged context, a distribution over the actions,
``action_dist[i, a] = pi_e(a | x_i)`` (``n x K``; a deterministic candidate is one-hot). A reward
model gives ``q_hat[i, a]``, the expected reward of action ``a`` for context ``x_i`` (``n x K``).

With the importance weight ``w_i = pi_e(a_i | x_i) / p_i`` the estimators are exactly those of
Open Bandit Pipeline 0.5.5 (``obp/ope/estimators.py`` at tag 0.5.5, commit 456a1ea6; the
``_estimate_round_rewards`` method of each class, which our ``round_rewards_*`` functions are):

- ``ips``: ``w_i r_i``; ``InverseProbabilityWeighting``, lines 334-338 (``reward * iw``);
- ``snips``: ``w_i r_i / mean(w)``; ``SelfNormalizedInverseProbabilityWeighting``, lines 655-656
  (``reward * iw / iw.mean()``);
- ``dm``: ``sum_a pi_e(a|x_i) q_hat(x_i, a)``; ``DirectMethod``, lines 734-741
  (``np.average(q_hat, weights=pi_e, axis=1)``);
- ``dr``: ``sum_a pi_e(a|x_i) q_hat(x_i, a) + w_i (r_i - q_hat(x_i, a_i))``; ``DoublyRobust``,
  lines 980-996.

The estimate is the mean of the per-round values over the ``n`` logged decisions
(``estimate_policy_value``), so SNIPS is ``sum_i w_i r_i / sum_i w_i``.

What is left out of obp, on purpose: ``position`` (we present a single slot, so obp's
``action_dist[:, :, 0]`` is our ``action_dist``), weight clipping (``lambda_``, default ``inf``
in obp, so the default formulas are the ones above) and estimated pscores (the log records the
true ones).

The confidence interval is obp's ``estimate_confidence_interval_by_bootstrap``
(``obp/utils.py`` lines 45-87): resample the rounds with replacement ``n_bootstrap`` times,
average each resample, take the ``alpha/2`` and ``1 - alpha/2`` percentiles (numpy's default
linear interpolation). The resample indices come from ``numpy.random.RandomState(random_state)``
in obp's order, so for IPS, DM and DR the interval equals obp's to rounding for the same seed.
One departure: obp bootstraps SNIPS's round values, whose normalisation ``mean(w)`` was fixed
on the full log; here each resample is normalised by its own weights
(``sum(w r)[resample] / sum(w)[resample]``), the bootstrap of the estimator itself. A resample
with no weight at all has no SNIPS value and is left out of the percentiles.

Beside the value each estimate carries diagnostics of how well the log supports the candidate
(how many decisions it rests on, offers it picks that the log rarely tried) as warnings written
for the marketer who has to act on them, each with a stable short code (``WARNING_CODES``).

Pure: arrays in, results out; no I/O, no clock; the only randomness is the seeded bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Method = Literal["ips", "snips", "dm", "dr"]
#: the estimators, in report order
METHODS: tuple[str, ...] = ("ips", "snips", "dm", "dr")
#: estimators that need a reward model (``q_hat``)
MODEL_METHODS = ("dm", "dr")

#: how far a row of ``action_dist`` may sum from 1 (float32 probabilities and rounding pass)
ROW_SUM_TOLERANCE = 1e-6

#: the warnings an estimate can carry, by code; the codes are stable, the wording may improve
WARNING_CODES: dict[str, str] = {
    "no_exploration": "every logged decision had probability 1: the log holds no randomised decisions",
    "no_support": "no logged decision shows an action the candidate would take",
    "low_support": "the candidate picks offers with fewer than min_support logged decisions",
    "low_ess": "the importance weights concentrate on few logged decisions (effective sample size)",
}

#: resample indices drawn per block of resamples: 2**23 int64 indices (64 MiB, and as much again for
#: their counts). A resample is summed as counts @ values, so one draw serves every column. Measured
#: on the dev box (numpy 2.4), 1000 resamples of 1M rounds: the MT19937 draws take 8.4 s, the counts
#: (bincount) 8.5 s, the products 1-2 s whatever the number of columns, where indexing each column
#: by the resample (obp's way) takes 6.6 s per column; end to end one estimate takes 10 s and two
#: candidates by three estimators (evaluate_policies, one pass) 12 s
_BOOTSTRAP_BLOCK = 1 << 23
#: a bootstrap column: ``(values, None)`` for a mean, ``(numerators, denominators)`` for a ratio of sums
_Column = tuple[np.ndarray, np.ndarray | None]
#: offers named in a support warning before "and N more"
_NAMED_OFFERS = 5


@dataclass(frozen=True)
class OPEEstimate:
    """One estimator's value of one candidate, its bootstrap interval and its support."""

    method: str  #: ``ips``, ``snips``, ``dm`` or ``dr``
    value: float  #: the estimated mean reward per decision under the candidate
    ci_low: float  #: lower end of the ``1 - alpha`` bootstrap interval (nan when n_bootstrap is 0)
    ci_high: float  #: upper end
    n_logged: int  #: logged decisions the estimate reads
    n_supported: int  #: logged decisions where the candidate gives the logged action positive probability
    effective_sample_size: float  #: ``(sum w)^2 / sum w^2`` of the importance weights (0 without support)
    max_weight: float  #: the largest importance weight ``pi_e(a_i|x_i) / p_i``
    alpha: float  #: significance level of the interval
    warnings: tuple[str, ...] = ()  #: plain-language warnings, in the order of ``warning_codes``
    warning_codes: tuple[str, ...] = ()  #: ``warning_codes[k]`` is the code (WARNING_CODES) of warnings[k]


# --------------------------------------------------------------------------- validation


def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per logged decision), got shape {a.shape}")
    return a


def _finite(a: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), a.shape)
        raise ValueError(f"{name} must be finite, got {a[where]} at {_where(where)}")


def _where(index: tuple) -> str:
    return f"round {index[0]}" if len(index) == 1 else f"round {index[0]}, action {index[1]}"


def _check_log(reward, action, pscore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The logged decisions as float rewards, int64 actions and float pscores, checked."""
    reward, action, pscore = _vector(reward, "reward"), _vector(action, "action"), _vector(pscore, "pscore")
    if not (len(reward) == len(action) == len(pscore)):
        raise ValueError(f"the logged arrays differ in length: reward has {len(reward)} rounds, "
                         f"action {len(action)}, pscore {len(pscore)}")
    if len(reward) == 0:
        raise ValueError("the log is empty: no logged decision to evaluate a policy on")
    if not np.issubdtype(action.dtype, np.integer):
        raise ValueError("action must hold integer indices 0..K-1 into the action list, "
                         f"got dtype {action.dtype}")
    for a, name in ((reward, "reward"), (pscore, "pscore")):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    reward, pscore = reward.astype(np.float64), pscore.astype(np.float64)
    _finite(reward, "reward")
    outside = ~((pscore > 0) & (pscore <= 1))  # nan fails both comparisons, so it is caught here too
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"pscore must be a probability in (0, 1], got {pscore[i]} at round {i} "
                         f"({int(outside.sum())} rounds outside); a pscore of 0 means the logged action "
                         f"could not have been chosen")
    return reward, action.astype(np.int64), pscore


def _check_policy(action_dist, n: int, name: str = "action_dist") -> np.ndarray:
    """A candidate's ``n x K`` action distribution, checked: non-negative rows summing to 1."""
    pi = np.asarray(action_dist)
    if pi.ndim == 3 and pi.shape[2] == 1:
        raise ValueError(f"{name} must be 2-D (n_rounds, n_actions), got shape {pi.shape}: a single slot "
                         f"has no position axis, pass {name}[:, :, 0]")
    if pi.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_rounds, n_actions), got shape {pi.shape}")
    if pi.shape[0] != n:
        raise ValueError(f"{name} has {pi.shape[0]} rows but the log has {n} rounds: "
                         "one row per logged decision")
    if pi.shape[1] == 0:
        raise ValueError(f"{name} has no actions (0 columns)")
    if not np.issubdtype(pi.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {pi.dtype}")
    pi = pi.astype(np.float64)
    _finite(pi, name)
    if (pi < 0).any():
        where = np.unravel_index(int(np.argmax(pi < 0)), pi.shape)
        raise ValueError(f"{name} must hold probabilities, got {pi[where]} at {_where(where)}")
    sums = pi.sum(axis=1)
    off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(f"{name} rows must sum to 1 (each is a distribution over the actions), but row {i} "
                         f"sums to {sums[i]:.6g} ({int(off.sum())} rows off by more than "
                         f"{ROW_SUM_TOLERANCE:g})")
    return pi


def _check_actions_in_range(action: np.ndarray, k: int, name: str = "action_dist") -> None:
    bad = (action < 0) | (action >= k)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"action index {action[i]} at round {i} is out of range: {name} has {k} actions, "
                         f"so indices run 0..{k - 1}")


def _check_q_hat(q_hat, shape: tuple[int, int]) -> np.ndarray:
    q = np.asarray(q_hat)
    if q.shape != shape:
        raise ValueError(f"q_hat must have the shape of action_dist {shape} (one expected reward per round "
                         f"and action), got {q.shape}")
    if not np.issubdtype(q.dtype, np.number):
        raise ValueError(f"q_hat must be numeric, got dtype {q.dtype}")
    q = q.astype(np.float64)
    _finite(q, "q_hat")
    return q


def _check_inputs(reward, action, pscore, action_dist, q_hat=None):
    reward, action, pscore = _check_log(reward, action, pscore)
    pi = _check_policy(action_dist, len(reward))
    _check_actions_in_range(action, pi.shape[1])
    q = None if q_hat is None else _check_q_hat(q_hat, pi.shape)
    return reward, action, pscore, pi, q


def _check_names(actions: Sequence[str] | None, k: int) -> list[str]:
    if actions is None:
        return [f"action {a}" for a in range(k)]
    names = [str(a) for a in actions]
    if len(names) != k:
        raise ValueError(f"actions names {len(names)} actions but action_dist has {k} columns: "
                         "one name per action")
    return names


# --------------------------------------------------------------------------- the estimators


def _weights(action: np.ndarray, pscore: np.ndarray, pi: np.ndarray) -> np.ndarray:
    # obp estimators.py l. 334: iw = action_dist[np.arange(n), action, position] / pscore
    return pi[np.arange(len(action)), action] / pscore


def _model_term(pi: np.ndarray, q: np.ndarray) -> np.ndarray:
    # obp l. 737 / 989: np.average(q_hat, weights=pi_e, axis=1), which divides by the row sum of pi_e;
    # kept, so a row summing to 1 +- ROW_SUM_TOLERANCE gives obp's number to rounding
    return (pi * q).sum(axis=1) / pi.sum(axis=1)


def _round_ips(reward, action, pscore, pi) -> np.ndarray:
    return reward * _weights(action, pscore, pi)


def _round_snips(reward, action, pscore, pi) -> np.ndarray:
    w = _weights(action, pscore, pi)
    if w.sum() == 0:  # obp would divide 0 by 0: no decision supports the candidate
        return np.full(len(w), np.nan)
    return reward * w / w.mean()


def _round_dm(pi, q) -> np.ndarray:
    return _model_term(pi, q)


def _round_dr(reward, action, pscore, pi, q) -> np.ndarray:
    factual = q[np.arange(len(action)), action]
    return _model_term(pi, q) + _weights(action, pscore, pi) * (reward - factual)


def round_rewards_ips(reward, action, pscore, action_dist) -> np.ndarray:
    """IPS per-round values ``w_i r_i`` (obp ``InverseProbabilityWeighting._estimate_round_rewards``,
    ``obp/ope/estimators.py`` lines 334-338, ``reward * iw`` with ``lambda_ = inf``)."""
    reward, action, pscore, pi, _ = _check_inputs(reward, action, pscore, action_dist)
    return _round_ips(reward, action, pscore, pi)


def round_rewards_snips(reward, action, pscore, action_dist) -> np.ndarray:
    """SNIPS per-round values ``w_i r_i / mean(w)`` (obp ``SelfNormalizedInverseProbabilityWeighting.
    _estimate_round_rewards``, lines 655-656, ``reward * iw / iw.mean()``); all nan when every weight is 0."""
    reward, action, pscore, pi, _ = _check_inputs(reward, action, pscore, action_dist)
    return _round_snips(reward, action, pscore, pi)


def round_rewards_dm(action_dist, q_hat) -> np.ndarray:
    """DM per-round values ``sum_a pi_e(a|x_i) q_hat(x_i, a)`` (obp ``DirectMethod._estimate_round_rewards``,
    lines 734-741, ``np.average(q_hat, weights=pi_e, axis=1)``)."""
    pi = np.asarray(action_dist)
    pi = _check_policy(pi, pi.shape[0] if pi.ndim else 0)
    return _round_dm(pi, _check_q_hat(q_hat, pi.shape))


def round_rewards_dr(reward, action, pscore, action_dist, q_hat) -> np.ndarray:
    """DR per-round values ``sum_a pi_e(a|x_i) q_hat(x_i, a) + w_i (r_i - q_hat(x_i, a_i))`` (obp
    ``DoublyRobust._estimate_round_rewards``, lines 980-996, with ``lambda_ = inf``)."""
    reward, action, pscore, pi, q = _check_inputs(reward, action, pscore, action_dist, q_hat)
    return _round_dr(reward, action, pscore, pi, q)


def ips(reward, action, pscore, action_dist) -> float:
    """Inverse propensity scoring: ``mean_i w_i r_i`` (obp ``InverseProbabilityWeighting``).
    Unbiased when the pscores are the logging policy's true probabilities and the candidate only picks
    actions the logging policy could pick."""
    return float(round_rewards_ips(reward, action, pscore, action_dist).mean())


def snips(reward, action, pscore, action_dist) -> float:
    """Self-normalised IPS: ``sum_i w_i r_i / sum_i w_i`` (obp ``SelfNormalizedInverseProbabilityWeighting``).
    Biased by O(1/n) but bounded by the range of the rewards, so steadier than IPS when weights are large;
    nan when no logged decision supports the candidate."""
    return float(round_rewards_snips(reward, action, pscore, action_dist).mean())


def dm(action_dist, q_hat) -> float:
    """Direct method: ``mean_i sum_a pi_e(a|x_i) q_hat(x_i, a)`` (obp ``DirectMethod``). Reads no reward
    at all: exactly as good as the reward model."""
    return float(round_rewards_dm(action_dist, q_hat).mean())


def dr(reward, action, pscore, action_dist, q_hat) -> float:
    """Doubly robust: DM plus the IPS-weighted residual of the reward model (obp ``DoublyRobust``).
    Unbiased with true pscores whatever the model; lower variance than IPS the better the model."""
    return float(round_rewards_dr(reward, action, pscore, action_dist, q_hat).mean())


# --------------------------------------------------------------------------- bootstrap


def _bootstrap(columns: Sequence[_Column], n_bootstrap: int, random_state: int | None) -> np.ndarray:
    """``n_bootstrap`` resampled estimates of each column, ``(len(columns), n_bootstrap)``.

    A column is ``(values, None)`` for a mean (obp's bootstrap of the round rewards) or
    ``(numerators, denominators)`` for a ratio of sums (SNIPS). All columns share the same
    resamples (common random numbers): the same seed gives every candidate and estimator the same
    draws, so their intervals differ by the data, not by the luck of the draw. The draws are
    ``RandomState(random_state).randint(0, n, n)`` per resample, the stream obp's
    ``random_.choice(samples, size=n)`` consumes, taken a block of resamples at a time.
    """
    n = len(columns[0][0])
    stacked = [v for column in columns for v in column if v is not None]
    values = np.stack(stacked, axis=1) if len(stacked) > 1 else stacked[0][:, None]
    out = np.empty((len(columns), n_bootstrap))
    rs = np.random.RandomState(random_state)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, n_bootstrap, block):
        b = min(start + block, n_bootstrap) - start
        idx = rs.randint(0, n, size=(b, n))
        idx += np.arange(b)[:, None] * n  # resample j counts into row j of the counts
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        sums = counts @ values  # (b, stacked columns): each resample's sum of each array
        at = 0
        for c, (_, denominators) in enumerate(columns):
            if denominators is None:
                out[c, start:start + b] = sums[:, at] / n
                at += 1
            else:
                num, den = sums[:, at], sums[:, at + 1]
                out[c, start:start + b] = np.divide(num, den, out=np.full(b, np.nan), where=den > 0)
                at += 2
    return out


def _percentiles(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    kept = boot[~np.isnan(boot)]
    if len(kept) == 0:
        return math.nan, math.nan
    # obp utils.py l. 81-82: np.percentile(boot_samples, 100 * (alpha / 2)) and 100 * (1 - alpha / 2)
    return float(np.percentile(kept, 100 * (alpha / 2))), float(np.percentile(kept, 100 * (1.0 - alpha / 2)))


# --------------------------------------------------------------------------- support diagnostics


@dataclass(frozen=True)
class _Support:
    n_supported: int
    effective_sample_size: float
    max_weight: float
    warnings: tuple[str, ...]
    warning_codes: tuple[str, ...]


def _percent(share: float) -> str:
    if 0 < share < 0.005:
        return "under 1%"
    return f"{share:.0%}"


def _support(action: np.ndarray, pscore: np.ndarray, pi: np.ndarray, names: list[str], min_support: int,
             min_ess: float, min_ess_share: float) -> _Support:
    n, k = pi.shape
    on_logged = pi[np.arange(n), action]
    w = on_logged / pscore
    total = w.sum()
    ess = float(total**2 / (w**2).sum()) if total > 0 else 0.0
    n_supported = int((on_logged > 0).sum())
    found: list[tuple[str, str]] = []

    def warn(code: str, *parts: str) -> None:
        found.append((code, "".join(parts)))

    if (pscore >= 1).all():
        warn("no_exploration", f"every one of the {n:,} logged decisions had probability 1: the log holds ",
             "no randomised decisions, so only the decisions where the candidate agrees with the logged ",
             "policy count. Add an exploration arm to the decisions before comparing policies offline")
    if n_supported == 0:
        warn("no_support", f"none of the {n:,} logged decisions shows an action the candidate would take: ",
             "the log cannot evaluate this candidate (IPS reads 0, SNIPS has no value, DM and DR rest on ",
             "the reward model alone). Log randomised decisions that include its offers")

    logged = np.bincount(action, minlength=k)
    chosen = pi.sum(axis=0) > 0
    rare = chosen & (logged < min_support)
    if rare.any():
        order = sorted(np.flatnonzero(rare), key=lambda a: (logged[a], a))
        listed = ", ".join(f"{names[a]} ({logged[a]:,} logged)" for a in order[:_NAMED_OFFERS])
        if len(order) > _NAMED_OFFERS:
            listed += f", and {len(order) - _NAMED_OFFERS} more"
        share = float(pi[:, rare].sum() / n)
        warn("low_support", f"the candidate picks actions the log rarely explored: {int(rare.sum())} of ",
             f"{int(chosen.sum())} offers it chooses have fewer than {min_support} logged decisions ",
             f"(offers: {listed}); they carry {_percent(share)} of its choices. Log more randomised ",
             "decisions on these offers before trusting the estimate")

    if n_supported > 0 and (ess < min_ess or ess < min_ess_share * n):
        warn("low_ess", f"effective sample size {ess:,.0f} of {n:,} logged decisions: the estimate rests on ",
             "few decisions, because the candidate differs a lot from the logged policy. Expect a wide ",
             "interval that may still be too narrow, and log more randomised decisions")

    return _Support(n_supported=n_supported, effective_sample_size=ess, max_weight=float(w.max()),
                    warnings=tuple(m for _, m in found), warning_codes=tuple(c for c, _ in found))


# --------------------------------------------------------------------------- estimate and compare


def _check_method(method: str, q: np.ndarray | None) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method in MODEL_METHODS and q is None:
        raise ValueError(f"method {method!r} needs q_hat, the reward model's expected reward per round "
                         "and action")


def _check_settings(n_bootstrap: int, alpha: float, random_state: int | None, min_support: int,
                    min_ess: float, min_ess_share: float) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 0:
        raise ValueError("n_bootstrap must be a non-negative integer (0 skips the interval), "
                         f"got {n_bootstrap!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    seed_ok = isinstance(random_state, int | np.integer) and 0 <= random_state < 2**32
    if random_state is not None and not seed_ok:
        raise ValueError(f"random_state must be None or an integer in [0, 2**32), got {random_state!r}")
    if min_support < 0 or min_ess < 0 or not 0 <= min_ess_share <= 1:
        raise ValueError("thresholds must be non-negative (min_ess_share at most 1), got "
                         f"min_support={min_support}, min_ess={min_ess}, min_ess_share={min_ess_share}")


def _columns(method: str, reward, action, pscore, pi, q) -> tuple[float, _Column]:
    """The point estimate and the bootstrap column of one method."""
    if method == "snips":
        w = _weights(action, pscore, pi)
        return float(_round_snips(reward, action, pscore, pi).mean()), (reward * w, w)
    rounds = {"ips": lambda: _round_ips(reward, action, pscore, pi), "dm": lambda: _round_dm(pi, q),
              "dr": lambda: _round_dr(reward, action, pscore, pi, q)}[method]()
    return float(rounds.mean()), (rounds, None)


@dataclass(frozen=True)
class _Pending:
    """One candidate's point estimates, bootstrap columns and support, before the bootstrap runs."""

    methods: tuple[str, ...]
    points: tuple[float, ...]
    columns: tuple[_Column, ...]
    support: _Support


def _prepare(methods: Sequence[str], reward, action, pscore, pi, q, names, *, min_support, min_ess,
             min_ess_share) -> _Pending:
    points, columns = zip(*(_columns(m, reward, action, pscore, pi, q) for m in methods), strict=True)
    return _Pending(tuple(methods), points, columns,
                    _support(action, pscore, pi, names, min_support, min_ess, min_ess_share))


def _finish(pending: Sequence[_Pending], n: int, *, n_bootstrap: int, alpha: float,
            random_state: int | None) -> list[list[OPEEstimate]]:
    """Run one bootstrap over every column of every candidate, and build the estimates."""
    columns = [c for p in pending for c in p.columns]
    if n_bootstrap:
        boot = _bootstrap(columns, n_bootstrap, random_state)
    else:
        boot = np.full((len(columns), 0), np.nan)  # no resamples: every interval is nan
    out, row = [], 0
    for p in pending:
        ests = []
        for method, value in zip(p.methods, p.points, strict=True):
            low, high = _percentiles(boot[row], alpha)
            row += 1
            ests.append(OPEEstimate(method=method, value=value, ci_low=low, ci_high=high, n_logged=n,
                                    n_supported=p.support.n_supported,
                                    effective_sample_size=p.support.effective_sample_size,
                                    max_weight=p.support.max_weight, alpha=alpha, warnings=p.support.warnings,
                                    warning_codes=p.support.warning_codes))
        out.append(ests)
    return out


def estimate(method: Method, reward, action, pscore, action_dist, q_hat=None, *,
             actions: Sequence[str] | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
             random_state: int | None = 0, min_support: int = 30, min_ess: float = 100.0,
             min_ess_share: float = 0.01) -> OPEEstimate:
    """One estimator's value of one candidate, with obp's bootstrap interval and the support diagnostics.

    ``method`` is ``ips``, ``snips``, ``dm`` or ``dr`` (the last two need ``q_hat``); the log
    (``reward``, ``action``, ``pscore``) is read by every method, DM included, for the diagnostics.
    ``actions`` names the action indices in the warnings. The interval is the ``1 - alpha`` percentile
    interval of ``n_bootstrap`` resamples of the rounds seeded by ``random_state`` (``None``: unseeded;
    ``n_bootstrap=0``: no interval, ``ci_low = ci_high = nan``).

    Warnings (``WARNING_CODES``): ``low_support`` when offers the candidate gives positive probability
    have fewer than ``min_support`` logged decisions; ``low_ess`` when the effective sample size is under
    ``min_ess`` or under ``min_ess_share`` of the log; ``no_support`` when no logged decision has an
    action the candidate would take; ``no_exploration`` when every pscore is 1.
    """
    reward, action, pscore, pi, q = _check_inputs(reward, action, pscore, action_dist, q_hat)
    _check_method(method, q)
    _check_settings(n_bootstrap, alpha, random_state, min_support, min_ess, min_ess_share)
    names = _check_names(actions, pi.shape[1])
    pending = _prepare([method], reward, action, pscore, pi, q, names, min_support=min_support,
                       min_ess=min_ess, min_ess_share=min_ess_share)
    done = _finish([pending], len(reward), n_bootstrap=n_bootstrap, alpha=alpha, random_state=random_state)
    return done[0][0]


#: the columns of ``evaluate_policies``, in order
EVALUATION_COLUMNS = ("candidate", "method", "value", "ci_low", "ci_high", "n_logged", "n_supported",
                      "effective_sample_size", "max_weight", "warning_codes", "warnings")


def evaluate_policies(reward, action, pscore, candidates: Mapping[str, np.ndarray], q_hat=None,
                      actions: Sequence[str] | None = None, *, methods: Sequence[str] | None = None,
                      n_bootstrap: int = 1000, alpha: float = 0.05, random_state: int | None = 0,
                      min_support: int = 30, min_ess: float = 100.0,
                      min_ess_share: float = 0.01) -> pd.DataFrame:
    """One row per candidate and estimator (``EVALUATION_COLUMNS``): the table the CLI prints.

    ``candidates`` maps a name to its ``n x K`` action distribution. ``methods`` defaults to IPS and
    SNIPS, plus DR when ``q_hat`` is given (DM on request: it reads no reward, so alone it only
    restates the reward model). Every row uses the same bootstrap resamples (one seed), so a row equals
    :func:`estimate` with the same arguments. ``warning_codes`` and ``warnings`` are joined with
    ``", "`` and ``" | "``; the other arguments are those of :func:`estimate`.
    """
    reward, action, pscore = _check_log(reward, action, pscore)
    if not candidates:
        raise ValueError("no candidates to evaluate: pass at least one name -> action_dist")
    if methods is None:
        methods = ("ips", "snips", "dr") if q_hat is not None else ("ips", "snips")
    methods = tuple(methods)
    if not methods:
        raise ValueError("no methods to run: pass at least one of " + ", ".join(METHODS))
    k: int | None = None  # the action count, fixed by the first candidate
    pending: list[_Pending] = []
    for name, action_dist in candidates.items():
        try:
            pi = _check_policy(action_dist, len(reward))
        except ValueError as e:
            raise ValueError(f"candidate {name!r}: {e}") from None
        if k is None:
            _check_actions_in_range(action, pi.shape[1])
            q = None if q_hat is None else _check_q_hat(q_hat, pi.shape)
            names = _check_names(actions, pi.shape[1])
            for m in methods:
                _check_method(m, q)
            _check_settings(n_bootstrap, alpha, random_state, min_support, min_ess, min_ess_share)
            k = pi.shape[1]
        elif pi.shape[1] != k:
            raise ValueError(f"candidate {name!r} has {pi.shape[1]} actions but the first candidate has {k}: "
                             "every candidate must cover the same action list")
        pending.append(_prepare(methods, reward, action, pscore, pi, q, names, min_support=min_support,
                                min_ess=min_ess, min_ess_share=min_ess_share))
    done = _finish(pending, len(reward), n_bootstrap=n_bootstrap, alpha=alpha, random_state=random_state)
    rows = [{"candidate": name, "method": e.method, "value": e.value, "ci_low": e.ci_low,
             "ci_high": e.ci_high, "n_logged": e.n_logged, "n_supported": e.n_supported,
             "effective_sample_size": e.effective_sample_size, "max_weight": e.max_weight,
             "warning_codes": ", ".join(e.warning_codes), "warnings": " | ".join(e.warnings)}
            for name, ests in zip(candidates, done, strict=True) for e in ests]
    return pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS))
