"""Candidate offer policies for off-policy evaluation (``cvm nbo evaluate --log``), as action
distributions over one action list.

The action list is the offers the log and the candidates can present, in catalog order,
then ``NO_OFFER`` (nothing presented: the control arm, or nothing eligible). A candidate is
an ``n x K`` matrix ``pi[i, a] = pi_e(a | x_i)`` over that list for the ``n`` logged
decisions (``scoring.ope``); here every candidate is built from the offer engine's
arbitration of each logged decision's context (``scoring.nbo.arbitrate``: ``eligible``,
``expected_value``, ``propensity``, ``why``) or from the log itself:

* ``current``: the logging policy's own choice, ``policy_offer_id`` (what its policy arm
  presents; the log's control and exploration arms are what make it estimable);
* ``propensity``: the eligible offer with the highest model propensity, value ignored;
* ``uplift``: the engine ranking every offer on incremental value (the catalog with
  ``propensity: uplift`` on every offer; an offer whose uplift interval lies below zero, or
  whose incremental value is not above the minimum, is not made, so a customer may get
  nothing), among the offers the logging engine could present;
* ``most-popular``: the eligible offer whose category most customers bought recently;
* ``random``: uniform over the eligible offers (a stochastic policy: the exploration arm's);
* ``no-offer``: nothing, to everyone (the control group's policy);
* a catalog file: that catalog's engine (its own offers, rules and weights).

Every candidate but a catalog file chooses among the offers the logging engine could present
to that customer then (``eligible``: every rule passed and the expected value above the
minimum), the only actions the log's exploration can have tried; a choice outside them has no
logged support and is counted as such (``unsupported_share``). Pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: the action "nothing presented", last in every action list
NO_OFFER = "(no offer)"
#: the built-in candidates, by name, in report order
BUILTIN = ("current", "propensity", "uplift", "most-popular", "random", "no-offer")
#: days of purchases behind ``most-popular``
POPULARITY_DAYS = 91


def action_list(*offer_lists: Sequence[str]) -> list[str]:
    """The offers of every list (first seen first, no repeats), then ``NO_OFFER``."""
    seen: dict[str, None] = {}
    for ids in offer_lists:
        for o in ids:
            seen.setdefault(str(o), None)
    return [*seen, NO_OFFER]


def action_index(offer_ids: Sequence[str | None], actions: Sequence[str]) -> np.ndarray:
    """Index into ``actions`` of each logged offer id (None: ``NO_OFFER``); an id the list
    lacks is an error naming it."""
    where = {a: k for k, a in enumerate(actions)}
    none = where[NO_OFFER]
    out = np.empty(len(offer_ids), dtype="int64")
    unknown: set[str] = set()
    for i, o in enumerate(offer_ids):
        if o is None or (isinstance(o, float) and np.isnan(o)):
            out[i] = none
        elif str(o) in where:
            out[i] = where[str(o)]
        else:
            unknown.add(str(o))
    if unknown:
        raise ValueError(f"the log presents offers the catalog lacks: {', '.join(sorted(unknown))}; evaluate "
                         "with the catalog the log was made with (--catalog)")
    return out


def pick_max(allowed: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Column of the highest ``key`` among the ``allowed`` offers (first on ties), -1 where none is;
    a NaN key counts as lowest."""
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape[1] == 0:
        return np.full(allowed.shape[0], -1, dtype="int64")
    k = np.where(allowed, np.nan_to_num(np.asarray(key, dtype="float64"), nan=-np.inf), -np.inf)
    k = np.where(allowed & np.isneginf(k), np.finfo("float64").min, k)  # allowed beats not allowed
    pick = np.argmax(k, axis=1)
    return np.where(allowed.any(axis=1), pick, -1).astype("int64")


def by_expected_value(result: Mapping[str, np.ndarray]) -> np.ndarray:
    """The engine's choice: the eligible offer of highest expected value (``scoring.nbo.ranking``'s first)."""
    return pick_max(result["eligible"], result["expected_value"])


def by_propensity(result: Mapping[str, np.ndarray]) -> np.ndarray:
    """The eligible offer with the highest propensity."""
    return pick_max(result["eligible"], result["propensity"])


def by_popularity(result: Mapping[str, np.ndarray], popularity: np.ndarray) -> np.ndarray:
    """The eligible offer with the highest ``popularity`` (one value per offer)."""
    allowed = np.asarray(result["eligible"], dtype=bool)
    return pick_max(allowed, np.broadcast_to(np.asarray(popularity, dtype="float64"), allowed.shape))


def popularity(days_since: np.ndarray, categories: Sequence[str], target_categories: Sequence[str | None],
               days: int = POPULARITY_DAYS) -> np.ndarray:
    """Per offer: the share of customers who bought its target category in the last ``days``
    days (``days_since`` customers x categories, NaN: never); 0 for an offer without one."""
    d = np.asarray(days_since, dtype="float64")
    share = (np.nan_to_num(d, nan=np.inf) <= days).mean(axis=0) if len(d) else np.zeros(len(categories))
    col = {c: j for j, c in enumerate(categories)}
    return np.array([float(share[col[c]]) if c in col else 0.0 for c in target_categories])


def one_hot(pick: np.ndarray, columns: Sequence[int], k: int) -> np.ndarray:
    """``n x k`` deterministic distribution: row i puts 1 on ``columns[pick[i]]``, or on the last
    action (``NO_OFFER``) where ``pick[i]`` is -1. ``columns`` maps the picker's offer columns to
    action indices."""
    pick = np.asarray(pick, dtype="int64")
    cols = np.asarray(list(columns) + [k - 1], dtype="int64")  # -1 indexes the appended NO_OFFER
    out = np.zeros((len(pick), k))
    out[np.arange(len(pick)), cols[pick]] = 1.0
    return out


def uniform(allowed: np.ndarray, columns: Sequence[int], k: int) -> np.ndarray:
    """``n x k``: uniform over each row's ``allowed`` offers, ``NO_OFFER`` where none is."""
    allowed = np.asarray(allowed, dtype=bool)
    n = allowed.shape[0]
    out = np.zeros((n, k))
    counts = allowed.sum(axis=1)
    if allowed.shape[1]:
        out[:, np.asarray(columns, dtype="int64")] = allowed / np.maximum(counts, 1)[:, None]
    out[counts == 0, k - 1] = 1.0
    return out


def logging_support(eligible: np.ndarray, columns: Sequence[int], k: int, *, control_share: float,
                    exploration_share: float, top: np.ndarray) -> np.ndarray:
    """``n x k``: the actions the logging policy (``scoring.arms``) could take for each round. With
    exploration, any eligible offer; without, only its top (``top``, a column of ``eligible``, -1:
    none); ``NO_OFFER`` with a control group or where nothing is eligible."""
    eligible = np.asarray(eligible, dtype=bool)
    n = eligible.shape[0]
    out = np.zeros((n, k), dtype=bool)
    cols = np.asarray(columns, dtype="int64")
    if exploration_share > 0:
        out[:, cols] = eligible
    else:
        has = np.asarray(top) >= 0
        out[np.flatnonzero(has), cols[np.asarray(top)[has]]] = True
    out[:, k - 1] = control_share > 0
    out[~eligible.any(axis=1), k - 1] = True
    return out


def unsupported_share(dist: np.ndarray, support: np.ndarray) -> float:
    """The share of a candidate's choices (probability mass, averaged over rounds) on actions the
    logging policy could not take there: what IPS, SNIPS and DR cannot see, and so leave out."""
    return float((np.asarray(dist) * ~np.asarray(support, dtype=bool)).sum(axis=1).mean())


def nothing(n: int, k: int) -> np.ndarray:
    """``n x k``: ``NO_OFFER`` everywhere."""
    out = np.zeros((n, k))
    out[:, k - 1] = 1.0
    return out


def fold_of(customer_ids: Sequence[str], folds: int = 2) -> np.ndarray:
    """A stable fold per customer (BLAKE2b of the id), the same on every run and machine."""
    import hashlib

    return np.array([int.from_bytes(hashlib.blake2b(str(c).encode(), digest_size=8).digest(), "big") % folds
                     for c in customer_ids], dtype="int64")


def cross_fitted_means(action: np.ndarray, reward: np.ndarray, fold: np.ndarray, k: int) -> np.ndarray:
    """The DR reward model ``q_hat`` (``n x k``): for a round in fold f, each action's mean reward
    over the rounds of the other folds (an action they never show: their mean reward overall).
    Cross-fitting keeps a round's own reward out of its ``q_hat``, so DR stays unbiased."""
    action, reward, fold = np.asarray(action), np.asarray(reward, dtype="float64"), np.asarray(fold)
    q = np.empty((len(action), k))
    for f in np.unique(fold):
        mine, other = fold == f, fold != f
        if not other.any():  # a single fold: no held-out rounds, the overall means
            other = np.ones_like(mine)
        sums = np.bincount(action[other], weights=reward[other], minlength=k)
        counts = np.bincount(action[other], minlength=k)
        base = float(reward[other].mean())
        q[mine] = np.where(counts > 0, sums / np.maximum(counts, 1), base)
    return q
