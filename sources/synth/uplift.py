"""Ground-truth response to offers (``truth/response/``): for every person and every category,
the chance to buy in that category within ``response_horizon_days`` of a contact made at the
end of the window, if not contacted (``p_control``) and if contacted with an offer for that
category (``p_treated``), and the uplift kind behind the pair (``UPLIFT_KINDS``):

* ``persuadable``: low p_control (at most 0.25), p_treated 8-38 points higher;
* ``sure_thing``: high both (p_control at least 0.15, median about 0.3, the top of this
  world where the mean is 6 %), p_treated 1-7 % of the headroom 1 - p_control higher;
* ``lost_cause``: low both (p_control at most 0.1), uplift 0-1.5 points;
* ``sleeping_dog``: p_control at least 0.05 and p_treated 15-60 % below it: contact puts
  them off.

What the kinds and probabilities rest on is visible in the tables, with noise, so an uplift
model can learn them: a habitual baseline (the chance that a person still buying, at their
purchase rate and basket size, buys the category in the horizon given its share of their
baskets, or adopts it if they have not bought it yet; zero after dropout), their taste for
the category, their campaign response and email open rates, and their purchase frequency.
Sure things buy the category often already; persuadables are alive, respond to campaigns and
like a category they have not adopted; lost causes have dropped out or rarely buy it;
sleeping dogs buy often and ignore emails. A kind is drawn per (person, category) from a
multinomial logit on those features whose intercepts are calibrated once per world, on
reference persons from their own stream, so that the kinds' expected shares are the
``SynthParams`` shares; within its kind, p_control follows the baseline.

The draws of a chunk come from their own component stream, so adding them changed no other
table or truth file.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from sources.synth.arrays import _rng
from sources.synth.behaviour import _persons
from sources.synth.entities import _Persons
from sources.synth.params import (
    CATEGORIES,
    LOST_CAUSE,
    PERSUADABLE,
    SLEEPING_DOG,
    SURE_THING,
    UPLIFT_KINDS,
)
from sources.synth.world import _GLOBAL, _World

#: component of the global stream drawing the reference persons of the calibration
_REFERENCE_COMPONENT = 4
_REFERENCE_PERSONS = 10_000
#: per kind (UPLIFT_KINDS order): the range p_control is held to (kinds are drawn where the
#: baseline suits them, so few rows need it)
_P_CONTROL_RANGE = np.array([(0.002, 0.25), (0.15, 0.98), (0.0005, 0.10), (0.05, 0.90)])
#: persons per block of the kind draw
_BLOCK = 50_000
#: bounds of the habitual baseline (logit-safe)
_BASE_MIN, _BASE_MAX = 1e-3, 0.98


@dataclass(frozen=True)
class _UpliftModel:
    """Per-kind intercepts of the kind logit, calibrated for the world's persons."""

    intercept: np.ndarray  # (4,), -inf for a kind of share 0


@dataclass
class _Response:
    kind: np.ndarray  # (n, C) code into UPLIFT_KINDS
    p_control: np.ndarray  # (n, C) float64
    p_treated: np.ndarray  # (n, C) float64


@dataclass
class _Features:
    logit_base: np.ndarray  # (n, C) logit of the habitual baseline
    adopted: np.ndarray  # (n, C) bought by the end of the window
    taste: np.ndarray  # (n, C) log of the preference relative to a uniform one
    alive: np.ndarray  # (n, 1)
    responsive: np.ndarray  # (n, 1) campaign response propensity, logit vs the mean
    opens: np.ndarray  # (n, 1) email open rate, logit vs the mean
    frequency: np.ndarray  # (n, 1) log purchase rate vs the mean

    def rows(self, sl: slice) -> _Features:
        return _Features(*(getattr(self, f.name)[sl] for f in fields(self)))


def _logit(x: np.ndarray) -> np.ndarray:
    return np.log(x / (1.0 - x))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _features(world: _World, p: _Persons) -> _Features:
    prm = world.params
    horizon = float(prm.response_horizon_days)
    alive = ~np.isfinite(p.dropout)
    adopted = p.adopt <= p.days
    pref = p.pref.astype(np.float64)
    adopted_pref = (pref * adopted).sum(axis=1, keepdims=True)
    # the category's share of the lines of later baskets (a new one joins the adopted ones)
    share = np.where(adopted, pref / adopted_pref, pref / (adopted_pref + pref))
    lines = 1.0 + prm.extra_lines_per_order * p.basket[:, None]
    in_order = 1.0 - (1.0 - share) ** lines
    buys = 1.0 - np.exp(-(p.rate[:, None] * horizon) * in_order)
    scale = prm.category_adoption_days / np.sqrt(len(CATEGORIES) * np.maximum(pref, 1e-9))
    adopts = 1.0 - np.exp(-horizon / scale)
    base = np.where(adopted, buys, 0.5 * adopts * buys) * alive[:, None]
    mean_open = 2.0 / 7.0  # mean of the Beta(2, 5) open rate
    return _Features(
        logit_base=_logit(np.clip(base, _BASE_MIN, _BASE_MAX)),
        adopted=adopted,
        taste=np.clip(np.log(len(CATEGORIES) * np.maximum(pref, 1e-9)), -4.0, 3.0),
        alive=alive[:, None].astype(np.float64),
        responsive=(_logit(np.clip(p.response_p, 1e-4, 0.9)) - _logit(prm.mean_response_propensity))[:, None],
        opens=(_logit(np.clip(p.open_p, 1e-4, 1 - 1e-4)) - _logit(mean_open))[:, None],
        frequency=np.log(np.maximum(p.rate * prm.mean_days_between_orders, 1e-6))[:, None],
    )


def _kind_logits(f: _Features) -> np.ndarray:
    """(n, C, 4) logits of the kinds before the intercepts."""
    lb = f.logit_base
    gone = 1.0 - f.alive
    new = (~f.adopted) * f.alive
    logits = np.empty((*lb.shape, len(UPLIFT_KINDS)))
    logits[..., PERSUADABLE] = (1.0 * f.taste * new + 0.7 * f.responsive - 3.0 * gone - 0.5 * f.adopted
                                - 1.5 * np.maximum(lb - _logit(np.float64(0.15)), 0.0))
    logits[..., SURE_THING] = 2.0 * lb
    logits[..., LOST_CAUSE] = -1.0 * lb
    logits[..., SLEEPING_DOG] = 0.8 * lb + 0.6 * f.frequency - 0.8 * f.opens - 4.0 * gone
    return logits


def _odds(logits: np.ndarray) -> np.ndarray:
    """exp of the logits, each row scaled to a maximum of 1 (no overflow)."""
    return np.exp(logits - logits.max(axis=-1, keepdims=True))


def _uplift_model(seed: int, world: _World) -> _UpliftModel:
    """Intercepts making the kinds' mean probabilities over reference persons (drawn like
    the persons of a chunk, from a stream of their own) the shares of the params. Newton
    steps on the convex mean log-sum-exp(logits + b) - shares . b, whose gradient is the
    mean probability minus the share; the first kind with a share stays at 0."""
    ref = _persons(_rng(seed, _GLOBAL, _REFERENCE_COMPONENT), world, 0, _REFERENCE_PERSONS)
    odds = _odds(_kind_logits(_features(world, ref))).reshape(-1, len(UPLIFT_KINDS))
    target = np.asarray(world.params.uplift_shares, dtype=np.float64)
    used = np.flatnonzero(target > 0)
    free = used[1:]
    intercept = np.full(len(target), -np.inf)
    intercept[used] = 0.0
    for _ in range(100):
        weighted = odds * np.exp(intercept)
        prob = weighted / weighted.sum(axis=1, keepdims=True)
        mean = prob.mean(axis=0)
        if np.abs(mean - target).max() < 1e-7 or not len(free):
            break
        hessian = np.diag(mean) - prob.T @ prob / len(prob)
        step = np.linalg.solve(hessian[np.ix_(free, free)], target[free] - mean[free])
        intercept[free] += np.clip(step, -2.0, 2.0)
    return _UpliftModel(intercept)


def _response(rng: np.random.Generator, world: _World, model: _UpliftModel, p: _Persons) -> _Response:
    """Kinds and probabilities of a chunk's persons x categories (every draw has the shape
    (n, C), whatever the kinds: the stream's use does not depend on the outcome)."""
    f = _features(world, p)
    shape = f.logit_base.shape
    pick = rng.random(shape)
    kind = np.empty(shape, dtype=np.int64)
    factor = np.exp(model.intercept)
    for lo in range(0, shape[0], _BLOCK):  # (n, C, 4) temporaries in blocks bound the memory
        cum = np.cumsum(_odds(_kind_logits(f.rows(slice(lo, lo + _BLOCK)))) * factor, axis=-1)
        kind[lo:lo + _BLOCK] = ((pick[lo:lo + _BLOCK] * cum[..., -1])[..., None] >= cum[..., :-1]).sum(axis=-1)
    # p_control is the baseline with noise (so a control group buys as the history does),
    # held to the kind's range
    base = _sigmoid(f.logit_base) * np.exp(rng.normal(0.0, 0.35, shape))
    p_control = np.clip(base, _P_CONTROL_RANGE[kind, 0], _P_CONTROL_RANGE[kind, 1])
    u = rng.random(shape)
    noise = rng.normal(0.0, 0.6, shape)
    persuaded = p_control + 0.08 + 0.30 * _sigmoid(0.8 * f.responsive + 0.5 * f.taste + noise)
    sure = p_control + (1.0 - p_control) * (0.01 + 0.06 * u)
    lost = p_control + 0.015 * u
    put_off = p_control * (0.85 - 0.45 * _sigmoid(-0.8 * f.opens + noise))
    p_treated = np.choose(kind, [persuaded, sure, lost, put_off])
    return _Response(kind.astype(np.int8), p_control, np.clip(p_treated, 0.0, 1.0))
