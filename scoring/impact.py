"""Impact of the next-best-offer policy, measured on the randomised arms of the decision log.

Every decision is logged with an arm drawn per customer by a hash of (customer id, salt,
period): ``control`` (no offer; the policy's would-be offer is kept as ``policy_offer_id``),
``exploration`` (a uniformly random eligible offer) and ``policy`` (the policy's top offer).
Outcome events (``impression``, ``click``, ``accept``, ``reject``, ``convert`` with an optional
money ``value``) come back per decision. :func:`measure_impact` turns the two tables into an
:class:`ImpactReport`: per-arm and per-(arm, offer) statistics, and the lift of the policy over
control and over exploration, with confidence intervals and a plain-language verdict.

How it differs from a per-impression success rate (Pega's Impact Analyzer) or a campaign-level
conversion share (Braze's global control group):

* **The customer is the unit of inference**, because the customer is the unit of randomisation.
  Conversion rate and value per customer are computed per customer (all of a customer's
  decisions of the arm in the window together), so a customer with many decisions weighs once
  and the per-customer observations are independent, which the intervals assume.
* **Intention to treat.** A customer counts in the arm they were assigned to, whatever happened
  next: decisions the caller released (never shown), decisions with nothing eligible and
  decisions that never got an impression all stay in the denominators. Dropping them would
  compare the policy's *shown* customers with all of control, a selected (biased) subset.
  Released decisions are reported separately and do not count as ``contacts``.
* **Honest intervals, named**: Newcombe's hybrid score interval for a difference of two
  proportions, Katz's log interval for their ratio, Welch's t interval for a difference of mean
  value per customer (unequal variances, zero-inflated values included) and the delta method on
  the log of the ratio of means; see the functions below for the formulas.
* **A verdict that can say "not enough data to call"** rather than reading noise as a result.

Pure: tables in, dataclasses out; no I/O, no clock, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

#: the arms of the decision log, in report order
ARMS = ("control", "exploration", "policy")
#: outcome event types; any other type is ignored (and counted in ``DataQuality.unknown_type``)
OUTCOME_TYPES = ("impression", "click", "accept", "reject", "convert")
#: (test, reference) pairs the report compares
COMPARISONS = (("policy", "control"), ("policy", "exploration"))
#: the metrics compared between arms
METRICS = ("conversion_rate", "value_per_customer")

POLICY_BETTER = "policy better"
POLICY_WORSE = "policy worse"
NO_DIFFERENCE = "no detectable difference"
NOT_ENOUGH = "not enough data to call"

DECISION_COLUMNS = ("decision_id", "customer_id", "arm", "offer_id", "policy_offer_id", "timestamp", "released")
OUTCOME_COLUMNS = ("decision_id", "type", "timestamp")  # plus an optional ``value``

NEWCOMBE = "Newcombe hybrid score interval (method 10, Wilson score limits) for a difference of proportions"
KATZ = "Katz log interval for a ratio of proportions (relative lift = ratio - 1)"
WELCH = "Welch t interval (Welch-Satterthwaite df) for a difference of means of value per customer"
DELTA = "delta method on the log of the ratio of means, normal quantile (relative lift = ratio - 1)"
WILSON = "Wilson score interval for a proportion"


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided confidence interval; ``None`` where undefined.

    ``note`` says why an estimate or an interval is missing (a zero count, no variation...).
    """

    estimate: float | None
    low: float | None
    high: float | None
    method: str
    note: str | None = None

    @property
    def width(self) -> float | None:
        return None if self.low is None or self.high is None else self.high - self.low

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval (False when the interval is undefined)."""
        return self.low is not None and self.high is not None and self.low <= value <= self.high


def _z(confidence: float) -> float:
    _check_confidence(confidence)
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _counts(x: int, n: int) -> tuple[int, int]:
    x, n = int(x), int(n)
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"need 0 <= successes <= n, got {x} of {n}")
    return x, n


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a proportion p = x / n (Wilson 1927).

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, z the normal quantile at
    ``(1 + confidence) / 2``. Stays inside [0, 1] and behaves at x = 0 or x = n.
    """
    x, n = _counts(successes, n)
    z = _z(confidence)
    if n == 0:
        return Interval(None, None, None, WILSON, "no observations")
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), WILSON)


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> Interval:
    """Newcombe's hybrid score interval for p1 - p2, p1 = x1/n1 (test), p2 = x2/n2 (reference).

    Newcombe (1998), method 10: with (l1, u1), (l2, u2) the Wilson intervals of p1 and p2,
    ``low = d - sqrt((p1 - l1)² + (u2 - p2)²)``, ``high = d + sqrt((u1 - p1)² + (p2 - l2)²)``,
    d = p1 - p2. Near nominal coverage even for small counts and rates near 0, where the Wald
    interval is too narrow.
    """
    x1, n1 = _counts(x1, n1)
    x2, n2 = _counts(x2, n2)
    if n1 == 0 or n2 == 0:
        return Interval(None, None, None, NEWCOMBE, "a group has no customers")
    w1, w2 = wilson_interval(x1, n1, confidence), wilson_interval(x2, n2, confidence)
    p1, l1, u1 = w1.estimate, w1.low, w1.high
    p2, l2, u2 = w2.estimate, w2.low, w2.high
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(d, low, high, NEWCOMBE)


def katz_relative(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> Interval:
    """Relative lift p1/p2 - 1 with Katz's log interval for the ratio of proportions.

    Katz et al. (1978): ``ln(p1/p2) ± z·sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2)``, exponentiated, minus 1.
    Undefined (``None``) when either count is zero: no continuity correction is applied, the
    report says so instead.
    """
    x1, n1 = _counts(x1, n1)
    x2, n2 = _counts(x2, n2)
    if n1 == 0 or n2 == 0:
        return Interval(None, None, None, KATZ, "a group has no customers")
    if x2 == 0:
        return Interval(None, None, None, KATZ, "the reference rate is 0: relative lift undefined")
    p1, p2 = x1 / n1, x2 / n2
    if x1 == 0:
        return Interval(p1 / p2 - 1, None, None, KATZ, "no conversions in the test group: Katz interval undefined")
    z = _z(confidence)
    log_ratio = math.log(p1 / p2)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return Interval(p1 / p2 - 1, math.exp(log_ratio - z * se) - 1, math.exp(log_ratio + z * se) - 1, KATZ)


def _sample(values: Any) -> np.ndarray:
    a = np.asarray(values, dtype="float64").ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError("values must be finite")
    return a


def welch_difference(test: Any, reference: Any, confidence: float = 0.95) -> Interval:
    """Welch's t interval for mean(test) - mean(reference), one observation per customer.

    ``d ± t_{df}·se`` with ``se² = s1²/n1 + s2²/n2`` (sample variances, ddof = 1) and the
    Welch-Satterthwaite ``df = se⁴ / ((s1²/n1)²/(n1-1) + (s2²/n2)²/(n2-1))``. Does not assume
    equal variances; relies on the central limit theorem for skewed, zero-inflated values, so
    it needs a reasonable number of customers (``min_customers``). Undefined with fewer than
    two customers in a group or no variation in either.
    """
    _check_confidence(confidence)
    a, b = _sample(test), _sample(reference)
    n1, n2 = len(a), len(b)
    d = float(a.mean() - b.mean()) if n1 and n2 else None
    if n1 < 2 or n2 < 2:
        return Interval(d, None, None, WELCH, "fewer than two customers in a group")
    q1, q2 = float(a.var(ddof=1)) / n1, float(b.var(ddof=1)) / n2
    se2 = q1 + q2
    if se2 <= 0:
        return Interval(d, None, None, WELCH, "no variation in either group")
    df = se2 ** 2 / (q1 ** 2 / (n1 - 1) + q2 ** 2 / (n2 - 1))
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    se = math.sqrt(se2)
    return Interval(d, d - t * se, d + t * se, WELCH)


def delta_relative(test: Any, reference: Any, confidence: float = 0.95) -> Interval:
    """Relative lift mean(test)/mean(reference) - 1, delta-method interval on the log of the ratio.

    ``Var(ln(m1/m2)) ≈ s1²/(n1·m1²) + s2²/(n2·m2²)`` (independent groups), interval
    ``exp(ln(m1/m2) ± z·sqrt(Var)) - 1``. Undefined unless both means are positive.
    """
    _check_confidence(confidence)
    a, b = _sample(test), _sample(reference)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return Interval(None, None, None, DELTA, "a group has no customers")
    m1, m2 = float(a.mean()), float(b.mean())
    if m2 <= 0:
        return Interval(None, None, None, DELTA, "the reference value per customer is not positive")
    estimate = m1 / m2 - 1
    if m1 <= 0:
        return Interval(estimate, None, None, DELTA, "the test value per customer is not positive")
    if n1 < 2 or n2 < 2:
        return Interval(estimate, None, None, DELTA, "fewer than two customers in a group")
    var = float(a.var(ddof=1)) / (n1 * m1 * m1) + float(b.var(ddof=1)) / (n2 * m2 * m2)
    z, log_ratio = _z(confidence), math.log(m1 / m2)
    half = z * math.sqrt(var)
    return Interval(estimate, math.exp(log_ratio - half) - 1, math.exp(log_ratio + half) - 1, DELTA)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class GroupStats:
    """Statistics of one arm (``offer_basis`` None) or of one (arm, offer).

    - ``customers``: distinct customers with at least one decision of the group in the window;
    - ``decisions``: decisions in the window (released ones included: intention to treat);
    - ``released``: of those, decisions the caller reported as never shown;
    - ``contacts``: decisions with an offer that were not released (control: 0);
    - ``impressions``: decisions with at least one attributed ``impression`` event;
    - ``responses``: decisions with an attributed impression *and* at least one attributed
      ``click`` or ``accept`` (a ``reject`` is not a response);
    - ``response_rate`` = responses / impressions, per decision; ``None`` without impressions;
    - ``converters``: customers with at least one attributed ``convert`` on a decision of the group;
    - ``conversion_rate`` = converters / customers, per customer; ``None`` without customers;
    - ``value``: sum of the attributed conversion values (a missing value counts 0);
    - ``value_per_customer`` = value / customers (customers without conversions count 0).

    For an offer row, ``offer_id`` is the offer presented first, except in the control arm where
    it is the policy's would-be offer (``offer_basis = "policy_offer_id"``): control customers
    got nothing. ``offer_id`` None means nothing was eligible.
    """

    arm: str
    offer_id: str | None
    offer_basis: str | None
    customers: int
    decisions: int
    released: int
    contacts: int
    impressions: int
    responses: int
    response_rate: float | None
    converters: int
    conversion_rate: float | None
    value: float
    value_per_customer: float | None


@dataclass(frozen=True)
class Lift:
    """The lift of ``test`` over ``reference`` on one metric, and the verdict.

    ``absolute`` = test - reference; ``relative`` = (test - reference) / reference. The verdict
    reads the absolute interval (see :func:`measure_impact`); ``reason`` says why in plain words.
    """

    test: str
    reference: str
    metric: str
    test_value: float | None
    reference_value: float | None
    test_customers: int
    reference_customers: int
    absolute: Interval
    relative: Interval
    verdict: str
    reason: str


@dataclass(frozen=True)
class DataQuality:
    """What was read and what was left out, and why."""

    decisions_in_window: int
    decisions_outside_window: int
    outcomes_counted: int
    outcome_of_decision_outside_window: int
    outcome_of_unknown_decision: int
    outcome_before_decision: int
    outcome_beyond_horizon: int
    outcome_without_timestamp: int
    unknown_type: int
    released_with_impression: int
    customers_in_several_arms: int


@dataclass(frozen=True)
class SampleRatio:
    """Sample-ratio-mismatch check: chi-square goodness of fit of customers per arm to the shares
    the assignment was configured with. A tiny p-value (``mismatch``: p < 0.001) means the arms
    are not what the randomisation should give (logging loss, a leaky assignment...), and the
    lifts should not be trusted."""

    expected_shares: dict[str, float]
    observed_customers: dict[str, int]
    chi2: float
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class ImpactReport:
    start: pd.Timestamp
    end: pd.Timestamp
    horizon_days: float
    attribution_complete_at: pd.Timestamp
    confidence: float
    min_customers: int
    max_ci_width: float
    max_relative_ci_width: float
    arms: tuple[GroupStats, ...]
    offers: tuple[GroupStats, ...]
    lifts: tuple[Lift, ...]
    quality: DataQuality
    sample_ratio: SampleRatio | None
    notes: tuple[str, ...]

    def arm(self, name: str) -> GroupStats:
        return next(a for a in self.arms if a.arm == name)

    def offer(self, arm: str, offer_id: str | None) -> GroupStats:
        return next(o for o in self.offers if o.arm == arm and o.offer_id == offer_id)

    def lift(self, reference: str, metric: str, test: str = "policy") -> Lift:
        return next(x for x in self.lifts if (x.test, x.reference, x.metric) == (test, reference, metric))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``json.dumps`` with ``allow_nan=False`` works): NaN and infinities become
        None, timestamps ISO 8601 strings."""
        return _jsonable(self)

    def table(self, which: Literal["lifts", "arms", "offers"] = "lifts") -> pd.DataFrame:
        """A flat frame for printing: one row per lift, per arm or per (arm, offer)."""
        if which == "arms":
            return pd.DataFrame([_flat(a) for a in self.arms], columns=[f.name for f in fields(GroupStats)])
        if which == "offers":
            return pd.DataFrame([_flat(o) for o in self.offers], columns=[f.name for f in fields(GroupStats)])
        if which != "lifts":
            raise ValueError(f"which must be 'lifts', 'arms' or 'offers', got {which!r}")
        rows = [{"test": x.test, "reference": x.reference, "metric": x.metric, "test_value": x.test_value,
                 "reference_value": x.reference_value, "absolute": x.absolute.estimate,
                 "absolute_low": x.absolute.low, "absolute_high": x.absolute.high,
                 "relative": x.relative.estimate, "relative_low": x.relative.low,
                 "relative_high": x.relative.high, "verdict": x.verdict} for x in self.lifts]
        return pd.DataFrame(rows)


def _flat(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------- measurement


def _utc(value: Any, name: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        raise ValueError(f"{name} must be a timestamp")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _utc_column(series: pd.Series) -> np.ndarray:
    """UTC wall times as naive datetime64 (naive input is taken as UTC, as the log writes it)."""
    ts = pd.to_datetime(series)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy()


def _as_str(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else str(value)


_to_str = np.frompyfunc(_as_str, 1, 1)


def _ids(series: pd.Series) -> np.ndarray:
    """Identifiers as an object array of str, missing ones None."""
    values = series.to_numpy(dtype=object, na_value=None)
    if not isinstance(series.dtype, pd.StringDtype):  # object columns may hold numbers
        values = _to_str(values).astype(object) if len(values) else values
    return values


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")


@dataclass(frozen=True)
class _Decisions:
    ids: np.ndarray
    customers: np.ndarray
    arms: np.ndarray  # index into ARMS
    offers: np.ndarray
    policy_offers: np.ndarray
    times: np.ndarray  # naive UTC datetime64
    released: np.ndarray


def _prepare_decisions(decisions: pd.DataFrame) -> _Decisions:
    _require(decisions, DECISION_COLUMNS, "decisions")
    ids, customers = _ids(decisions["decision_id"]), _ids(decisions["customer_id"])
    if pd.isna(ids).any() or pd.isna(customers).any():
        raise ValueError("every decision needs a decision_id and a customer_id")
    index = pd.Index(ids)
    if index.has_duplicates:
        raise ValueError(f"duplicate decision_id, e.g. {index[index.duplicated()][0]!r}")
    arm_names = _ids(decisions["arm"])
    arms = pd.Index(ARMS).get_indexer(arm_names)
    if (arms < 0).any():
        unknown = sorted({str(a) for a in arm_names[arms < 0]})
        raise ValueError(f"unknown arms {unknown}; expected {list(ARMS)}")
    times = _utc_column(decisions["timestamp"])
    if np.isnat(times).any():
        raise ValueError("every decision needs a timestamp")
    released = decisions["released"]
    released = released.astype(object).where(released.notna(), False).astype(bool).to_numpy()
    return _Decisions(ids, customers, arms, _ids(decisions["offer_id"]), _ids(decisions["policy_offer_id"]),
                      times, released)


def _outcome_values(outcomes: pd.DataFrame) -> np.ndarray:
    if "value" not in outcomes.columns:
        return np.full(len(outcomes), np.nan)
    value = pd.to_numeric(outcomes["value"], errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    if np.isinf(value).any():
        raise ValueError("outcome values must be finite (or NaN for none)")
    return value


def _count(groups: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(groups, weights=None if weights is None else weights.astype("float64"), minlength=size)


def _group_table(group: np.ndarray, size: int, customer: np.ndarray, n_customers: int,
                 flags: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per group: decision-level counts, and customer-level converters and value; with the group
    and the value of every (group, customer) pair, the observations of the value intervals."""
    table = {"decisions": _count(group, size)}
    for name in ("released", "contacts", "impressions", "responses"):
        table[name] = _count(group, size, flags[name])
    pairs, keys = pd.factorize(group.astype("int64") * max(n_customers, 1) + customer)
    pair_group = (np.asarray(keys, dtype="int64") // max(n_customers, 1)).astype("int64")
    pair_converted = _count(pairs, len(keys), flags["converted"]) > 0
    pair_value = _count(pairs, len(keys), flags["value"])
    table["customers"] = _count(pair_group, size)
    table["converters"] = _count(pair_group, size, pair_converted)
    table["value"] = _count(pair_group, size, pair_value)
    return table, pair_group, pair_value


def _stats(arm: str, offer_id: str | None, basis: str | None, table: Mapping[str, np.ndarray],
           g: int) -> GroupStats:
    def count(name: str) -> int:
        return round(float(table[name][g]))

    customers, impressions, responses, converters = (count("customers"), count("impressions"),
                                                     count("responses"), count("converters"))
    value = float(table["value"][g])
    return GroupStats(
        arm=arm, offer_id=offer_id, offer_basis=basis, customers=customers, decisions=count("decisions"),
        released=count("released"), contacts=count("contacts"), impressions=impressions, responses=responses,
        response_rate=responses / impressions if impressions else None, converters=converters,
        conversion_rate=converters / customers if customers else None,
        value=value, value_per_customer=value / customers if customers else None)


def _verdict(metric: str, test: GroupStats, reference: GroupStats, absolute: Interval, *, min_customers: int,
             max_ci_width: float, max_relative_ci_width: float) -> tuple[str, str]:
    small = [g for g in (test, reference) if g.customers < min_customers]
    if small:
        who = ", ".join(f"{g.arm} has {g.customers} customers" for g in small)
        return NOT_ENOUGH, f"{who}, fewer than min_customers={min_customers}"
    if absolute.width is None:
        return NOT_ENOUGH, f"no interval: {absolute.note}"
    lo, hi = absolute.low, absolute.high
    where = f"the {metric} lift interval [{lo:.4g}, {hi:.4g}]"
    sign = ("excludes 0, but it" if lo > 0 or hi < 0 else "contains 0 and")
    if metric == "conversion_rate":
        if absolute.width > max_ci_width:
            return NOT_ENOUGH, (f"{where} {sign} is wider than max_ci_width={max_ci_width:g}: "
                                "the difference is not measured precisely enough yet")
    else:
        scale = reference.value_per_customer or 0.0
        if scale <= 0:
            return NOT_ENOUGH, f"{reference.arm} has no conversion value: precision cannot be judged"
        if absolute.width / scale > max_relative_ci_width:
            return NOT_ENOUGH, (f"{where} {sign} is wider than max_relative_ci_width={max_relative_ci_width:g} "
                                f"of {reference.arm}'s value per customer ({scale:.4g}): "
                                "the difference is not measured precisely enough yet")
    if lo > 0:
        return POLICY_BETTER, f"{where} lies above 0: {test.arm} beats {reference.arm}"
    if hi < 0:
        return POLICY_WORSE, f"{where} lies below 0: {test.arm} does worse than {reference.arm}"
    return NO_DIFFERENCE, f"{where} contains 0 and is narrow enough: any difference is small"


def _sample_ratio(arms: tuple[GroupStats, ...], expected_shares: Mapping[str, float]) -> SampleRatio | None:
    unknown = sorted(set(expected_shares) - set(ARMS))
    if unknown:
        raise ValueError(f"expected_shares has unknown arms {unknown}")
    if any(not (share > 0) for share in expected_shares.values()):
        raise ValueError("expected_shares must be positive")
    names = [a for a in ARMS if a in expected_shares]
    total_share = sum(expected_shares[a] for a in names)
    shares = {a: float(expected_shares[a]) / total_share for a in names}
    observed = {a.arm: a.customers for a in arms if a.arm in shares}
    n = sum(observed.values())
    if n == 0 or len(names) < 2:
        return None
    chi2, p = stats.chisquare([observed[a] for a in names], [n * shares[a] for a in names])
    return SampleRatio(shares, observed, float(chi2), float(p), bool(p < 0.001))


def frames_from_log(decisions: pd.DataFrame, outcomes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The decision log's tables as the inputs of :func:`measure_impact`.

    ``decisions`` and ``outcomes`` as ``DecisionStore.decisions`` and ``.outcomes`` return them
    (times as integer microseconds since the epoch, UTC: ``decided_us``, ``occurred_us``) become
    (decisions: ``DECISION_COLUMNS``; outcomes: ``OUTCOME_COLUMNS`` and ``value``) with aware UTC
    timestamps, ``released`` as bool and ``value`` numeric (missing or unreadable: NaN). Other
    columns are dropped; outcome types are passed through (``measure_impact`` ignores and counts
    the ones it does not know, such as the log's ``not_shown``, already folded into ``released``).
    """
    frame = pd.DataFrame({
        "decision_id": decisions["decision_id"], "customer_id": decisions["customer_id"],
        "arm": decisions["arm"], "offer_id": decisions["offer_id"],
        "policy_offer_id": decisions["policy_offer_id"],
        "timestamp": pd.to_datetime(decisions["decided_us"].astype("int64"), unit="us", utc=True),
        "released": decisions["released"].astype(bool)})
    events = pd.DataFrame({
        "decision_id": outcomes["decision_id"], "type": outcomes["type"],
        "timestamp": pd.to_datetime(outcomes["occurred_us"].astype("int64"), unit="us", utc=True),
        "value": pd.to_numeric(outcomes["value"], errors="coerce").astype("float64")})
    return frame, events


def measure_impact(decisions: pd.DataFrame, outcomes: pd.DataFrame, *, start: Any, end: Any,
                   horizon_days: float = 28, min_customers: int = 100, confidence: float = 0.95,
                   max_ci_width: float = 0.05, max_relative_ci_width: float = 0.5,
                   expected_shares: Mapping[str, float] | None = None) -> ImpactReport:
    """Per-arm and per-(arm, offer) statistics and the policy's lifts, from the decision log.

    **Window.** A decision counts when ``start <= timestamp < end`` (UTC; naive timestamps are
    read as UTC). An outcome counts when its decision counts and it happened within the
    attribution horizon of that decision: ``0 <= outcome time - decision time < horizon_days``,
    even after ``end``. Outcomes before their decision, beyond the horizon, of unknown decisions
    or of unknown types are ignored and counted in ``quality``. The numbers are final only once
    ``attribution_complete_at`` (``end + horizon``) has passed.

    **Units.** Impressions and response rate are per decision (see :class:`GroupStats`).
    Conversion rate and value per customer are per customer: a customer's decisions of an arm
    are pooled, a customer converts if any of them converts, a convert event's ``value`` (NaN
    counts 0; several converts add up) goes to that customer. A customer whose assignment
    changed between periods inside the window is counted in each arm they had decisions in (with
    that arm's decisions only); ``quality.customers_in_several_arms`` says how many, and a window
    inside one assignment period avoids it.

    **Intention to treat.** Released decisions (never shown) stay in every denominator and their
    outcomes still count; they are not ``contacts``. The comparison is then between the groups as
    randomised, which is what the intervals are valid for.

    **Lifts** of policy over control and over exploration, on conversion rate (absolute:
    :func:`newcombe_difference`; relative: :func:`katz_relative`) and on value per customer
    (absolute: :func:`welch_difference`; relative: :func:`delta_relative`), at ``confidence``.
    The four comparisons are not corrected for multiplicity.

    **Verdict** per lift, read from the absolute interval, in this order:

    1. "not enough data to call" when either group has fewer than ``min_customers`` customers,
       when the interval is undefined, or when it is too wide to read: wider than
       ``max_ci_width`` (conversion rate, in rate points: 0.05 = 5 points) or, for value per
       customer, wider than ``max_relative_ci_width`` times the reference group's value per
       customer. A wide interval that excludes 0 is still "not enough data to call" (the reason
       says it excludes 0): the size of the effect is not known to the precision asked;
    2. "policy better" when the interval lies above 0, "policy worse" when below;
    3. "no detectable difference" when it contains 0 (and is narrow, by 1.).

    ``expected_shares`` (e.g. ``{"control": 0.05, "exploration": 0.05, "policy": 0.9}``) adds a
    sample-ratio-mismatch check of customers per arm.
    """
    _check_confidence(confidence)
    start_ts, end_ts = _utc(start, "start"), _utc(end, "end")
    if not start_ts < end_ts:
        raise ValueError(f"start ({start_ts}) must be before end ({end_ts})")
    if not horizon_days >= 0:
        raise ValueError(f"horizon_days must be >= 0, got {horizon_days}")
    if min_customers < 0 or not max_ci_width > 0 or not max_relative_ci_width > 0:
        raise ValueError("min_customers must be >= 0, max_ci_width and max_relative_ci_width > 0")
    horizon = pd.Timedelta(days=horizon_days)

    start64, end64 = start_ts.tz_localize(None).to_datetime64(), end_ts.tz_localize(None).to_datetime64()

    dec = _prepare_decisions(decisions)
    in_window = (dec.times >= start64) & (dec.times < end64)
    _require(outcomes, OUTCOME_COLUMNS, "outcomes")
    out_decision = pd.Index(dec.ids).get_indexer(_ids(outcomes["decision_id"]))  # -1: unknown decision
    out_type = pd.Index(OUTCOME_TYPES).get_indexer(_ids(outcomes["type"]))  # -1: unknown type
    out_time = _utc_column(outcomes["timestamp"])
    out_value = _outcome_values(outcomes)

    # attribution: the outcome's decision in the window, the outcome within [0, horizon) of it
    known_type, of_known = out_type >= 0, out_decision >= 0
    row = np.where(of_known, out_decision, 0)
    of_window = of_known & in_window[row] if len(dec.ids) else of_known
    has_time = ~np.isnat(out_time)
    candidate = known_type & of_window
    delay = out_time - dec.times[row] if len(dec.ids) else np.zeros(len(out_time), dtype="timedelta64[ns]")
    before = candidate & has_time & (delay < np.timedelta64(0, "ns"))
    beyond = candidate & has_time & (delay >= horizon.to_timedelta64())
    counted = candidate & has_time & ~before & ~beyond
    rows, kinds, amounts = out_decision[counted], out_type[counted], out_value[counted]
    n = len(dec.ids)
    impression, click, accept, convert = (OUTCOME_TYPES.index(k) for k in ("impression", "click", "accept",
                                                                             "convert"))
    impressed = _count(rows[kinds == impression], n) > 0
    clicked = _count(rows[(kinds == click) | (kinds == accept)], n) > 0
    conversions = kinds == convert
    converted = _count(rows[conversions], n) > 0
    value = _count(rows[conversions], n, np.nan_to_num(amounts[conversions], nan=0.0))

    w = np.flatnonzero(in_window)
    arm = dec.arms[w].astype("int64")
    released = dec.released[w]
    offer = dec.offers[w]
    flags = {"released": released, "contacts": ~pd.isna(offer) & ~released, "impressions": impressed[w],
             "responses": impressed[w] & clicked[w], "converted": converted[w], "value": value[w]}
    customer, customer_ids = pd.factorize(dec.customers[w])
    n_customers = len(customer_ids)

    by_arm, pair_arm, pair_value = _group_table(arm, len(ARMS), customer, n_customers, flags)
    arms = tuple(_stats(name, None, None, by_arm, a) for a, name in enumerate(ARMS))
    values = {name: pair_value[pair_arm == a] for a, name in enumerate(ARMS)}

    control = ARMS.index("control")
    offer_key = np.where(arm == control, dec.policy_offers[w], offer)
    offer_code, offer_ids = pd.factorize(offer_key)  # -1: no offer (nothing eligible)
    width = len(offer_ids) + 1
    by_offer, _, _ = _group_table(arm * width + offer_code + 1, len(ARMS) * width, customer, n_customers, flags)
    offers = []
    for a, name in enumerate(ARMS):
        present = [k for k in range(width) if by_offer["decisions"][a * width + k] > 0]
        present.sort(key=lambda k: (k == 0, "" if k == 0 else str(offer_ids[k - 1])))
        basis = "policy_offer_id" if name == "control" else "offer_id"
        offers.extend(_stats(name, None if k == 0 else str(offer_ids[k - 1]), basis, by_offer, a * width + k)
                      for k in present)

    stats_of = {a.arm: a for a in arms}
    lifts = []
    for test, reference in COMPARISONS:
        t, r = stats_of[test], stats_of[reference]
        for metric in METRICS:
            if metric == "conversion_rate":
                absolute = newcombe_difference(t.converters, t.customers, r.converters, r.customers, confidence)
                relative = katz_relative(t.converters, t.customers, r.converters, r.customers, confidence)
                tv, rv = t.conversion_rate, r.conversion_rate
            else:
                absolute = welch_difference(values[test], values[reference], confidence)
                relative = delta_relative(values[test], values[reference], confidence)
                tv, rv = t.value_per_customer, r.value_per_customer
            verdict, reason = _verdict(metric, t, r, absolute, min_customers=min_customers,
                                       max_ci_width=max_ci_width, max_relative_ci_width=max_relative_ci_width)
            lifts.append(Lift(test, reference, metric, tv, rv, t.customers, r.customers, absolute, relative,
                              verdict, reason))

    arm_customer = pd.unique(arm * max(n_customers, 1) + customer)
    arms_per_customer = _count(arm_customer % max(n_customers, 1), n_customers)
    quality = DataQuality(
        decisions_in_window=len(w), decisions_outside_window=int(n - len(w)),
        outcomes_counted=int(counted.sum()),
        outcome_of_decision_outside_window=int((known_type & of_known & ~of_window).sum()),
        outcome_of_unknown_decision=int((known_type & ~of_known).sum()),
        outcome_before_decision=int(before.sum()), outcome_beyond_horizon=int(beyond.sum()),
        outcome_without_timestamp=int((candidate & ~has_time).sum()), unknown_type=int((~known_type).sum()),
        released_with_impression=int((released & impressed[w]).sum()),
        customers_in_several_arms=int((arms_per_customer > 1).sum()))
    notes = (
        ("Customer-level inference: conversion rate and value per customer count each customer once "
         "per arm (the randomisation unit), all their decisions in the window pooled."),
        ("Intention to treat: released decisions (never shown) and decisions with nothing eligible stay "
         "in the denominators; released decisions are not contacts."),
        ("Control offer rows are keyed by policy_offer_id, the offer the policy would have made: control "
         "customers received no offer. A control row is comparable with the policy row of the same offer; "
         "exploration rows (random offers) are not."),
        "Response rate = decisions with an impression and a click or accept / decisions with an impression.",
        (f"Outcomes are attributed to their decision for {horizon_days:g} days; the figures are final after "
         f"{(end_ts + horizon).isoformat()}."),
        f"Intervals at {confidence:g} confidence, not corrected for the {len(lifts)} comparisons.",
    )
    return ImpactReport(
        start=start_ts, end=end_ts, horizon_days=float(horizon_days), attribution_complete_at=end_ts + horizon,
        confidence=confidence, min_customers=int(min_customers), max_ci_width=float(max_ci_width),
        max_relative_ci_width=float(max_relative_ci_width), arms=arms, offers=tuple(offers), lifts=tuple(lifts),
        quality=quality, sample_ratio=_sample_ratio(arms, expected_shares) if expected_shares else None,
        notes=notes)
