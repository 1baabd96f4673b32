"""Randomised arms and the logging policy's propensity (pscore) of each decision.

Assignment is a pure function of (customer id, experiment salt, period), so the service,
every worker, the nightly batch and the simulation put a customer in the same arm
without sharing any state, and an analyst can recompute it:

    u = first 8 bytes of BLAKE2b("<salt>|<period>|<customer id>") / 2**64   (uniform on [0, 1))
    arm = control      if u < control_share
          exploration  if u < control_share + exploration_share
          policy       otherwise

``period = (decision date - epoch) // period_days``, so the groups are stable within a
period and re-drawn at its end (Braze's practice of a refreshed global control group).
An exploration customer gets the eligible offer at index ``floor(v x n)`` of the ``n``
eligible offers in catalog order, with ``v`` drawn the same way from
``"<salt>|<period>|<customer id>|explore"``.

The pscore is the probability that the logging policy, as a whole (the arms' mixture),
presents that first offer to that customer at that moment. With shares c (control),
e (exploration), p = 1 - c - e and n eligible offers:

=================== =================== ============================================
arm                 first offer         pscore
=================== =================== ============================================
any (n = 0)         none                1
control (n > 0)     none                c
policy              the policy's top    p + e / n   (exploration can draw it too)
exploration         offer a             e / n + (p if a is the policy's top else 0)
=================== =================== ============================================

These are the propensities inverse-propensity estimators (IPW, DR; Open Bandit Pipeline's
``pscore``) need to evaluate another policy offline from the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np

from scoring.catalog import Experiment

ARMS = ("control", "exploration", "policy")
CONTROL, EXPLORATION, POLICY = ARMS


def period_of(when: date | datetime, experiment: Experiment) -> int:
    """The assignment period a decision at ``when`` falls in."""
    day = when.date() if isinstance(when, datetime) else when
    return (day - experiment.epoch).days // experiment.period_days


def _uniform(keys: Sequence[str]) -> np.ndarray:
    out = np.empty(len(keys), dtype="float64")
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def draws(customer_ids: Sequence[str], experiment: Experiment, period: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) per customer: the arm draw and the exploration draw, uniform on [0, 1)."""
    prefix = f"{experiment.salt}|{period}|"
    u = _uniform([prefix + str(c) for c in customer_ids])
    v = _uniform([prefix + str(c) + "|explore" for c in customer_ids])
    return u, v


def arms_of(u: np.ndarray, experiment: Experiment) -> np.ndarray:
    """Arm names (object array) from the arm draws."""
    c, e = experiment.control_share, experiment.exploration_share
    return np.where(u < c, CONTROL, np.where(u < c + e, EXPLORATION, POLICY)).astype(object)


def assign(customer_ids: Sequence[str], experiment: Experiment, when: date | datetime
           ) -> tuple[np.ndarray, np.ndarray]:
    """Arm and exploration draw of each customer for a decision at ``when``."""
    u, v = draws(customer_ids, experiment, period_of(when, experiment))
    return arms_of(u, experiment), v


def explore_index(v: np.ndarray, n_eligible: np.ndarray) -> np.ndarray:
    """Index (0-based, among the eligible offers in catalog order) an exploration customer gets."""
    n = np.asarray(n_eligible, dtype="int64")
    return np.minimum((np.asarray(v) * n).astype("int64"), np.maximum(n - 1, 0))


def pscores(arms: np.ndarray, n_eligible: np.ndarray, first_is_top: np.ndarray, experiment: Experiment
            ) -> np.ndarray:
    """The logging policy's probability of each decision's first offer (table above)."""
    c, e, p = experiment.control_share, experiment.exploration_share, experiment.policy_share
    n = np.asarray(n_eligible, dtype="float64")
    arms = np.asarray(arms, dtype=object)
    top = np.asarray(first_is_top, dtype=bool)
    share = np.divide(e, n, out=np.zeros_like(n), where=n > 0)
    out = np.where(arms == CONTROL, c, np.where(arms == POLICY, p + share, share + np.where(top, p, 0.0)))
    return np.where(n == 0, 1.0, out)
