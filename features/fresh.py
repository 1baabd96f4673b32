"""Fresh features: a customer's vector brought up to the last event, without a rebuild.

The nightly snapshot of day S holds features as of 00:00 of S. Events of day S reach the
service through ``POST /events`` during the day. The vector they give is the one the
*next* nightly snapshot (as of S+1) will hold, computed incrementally:

    fresh(S+1) = base(S+1) + what day S's events add

``base(S+1)`` is built with the snapshot (``features.pipeline``): the features as of S+1
from the data before S, so every window already has its S+1 edges (an order that leaves
the 30-day window tonight has left it). Day S's events then only add: orders and spend in
every window, recency, purchase days, average order value, mean inter-purchase days,
category recency, event counts, days since the last event and abandoned carts. For the
carts, ``open_carts`` are the carts of the last hours before S that base(S+1) judged
abandoned only because it could not see day S: an order of day S within the hours
un-abandons them. These features (``maintained``) equal tomorrow's nightly snapshot
exactly, as long as day S's data reaches the project through the event log; the others
(``not_maintained``: population quintiles and the RFM segment, trends, spread of
inter-purchase days, category and discount shares, campaign features, attributes) keep
base(S+1)'s values and are refreshed by the nightly batch.

Pure: typed rows in, a dict out; the day and the feature set explicit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from base.dates import cutoff, to_us
from features.definitions import FeatureSet, slug

_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
#: money sums are rounded as the builder rounds them (features.build.MONEY_DECIMALS)
_MONEY = 6


@dataclass
class DayActivity:
    """What one customer's events of day S add (order of arrival does not matter)."""

    #: order_id -> [first line's time (us), sum of its lines' amounts]
    orders: dict[str, list[float]] = field(default_factory=dict)
    categories: set[str] = field(default_factory=set)
    types: dict[str, int] = field(default_factory=dict)
    carts: list[int] = field(default_factory=list)
    events: int = 0
    last_event_us: int | None = None

    def add(self, event_type: str, occurred_us: int, properties: Mapping[str, object]) -> None:
        self.events += 1
        self.types[event_type] = self.types.get(event_type, 0) + 1
        self.last_event_us = occurred_us if self.last_event_us is None else max(self.last_event_us, occurred_us)
        if event_type == "add_to_cart":
            self.carts.append(occurred_us)
        if event_type == "purchase":
            order = self.orders.setdefault(str(properties["order_id"]), [occurred_us, 0.0])
            order[0] = min(order[0], occurred_us)
            order[1] += float(properties["amount"])  # type: ignore[arg-type]
            if properties.get("category") is not None:
                self.categories.add(str(properties["category"]))


@dataclass(frozen=True)
class Horizon:
    """Day S: the events it accepts, [start_us, end_us), and the as_of (S+1) it produces."""

    day: date

    @property
    def start_us(self) -> int:
        return to_us(cutoff(self.day))

    @property
    def end_us(self) -> int:
        return self.start_us + _DAY_US

    @property
    def as_of(self) -> date:
        return self.day + timedelta(days=1)


def activity(rows: Iterable[tuple[str, str, int, str]], horizon: Horizon) -> dict[str, DayActivity]:
    """Per customer, the day's activity of event-log rows (customer_id, event_type, occurred_us,
    properties JSON); rows outside the day are ignored."""
    out: dict[str, DayActivity] = {}
    for cid, etype, us, props in rows:
        if horizon.start_us <= us < horizon.end_us:
            out.setdefault(cid, DayActivity()).add(etype, us, json.loads(props))
    return out


def maintained(fs: FeatureSet) -> list[str]:
    """The features ``fresh_vector`` keeps equal to the next nightly snapshot."""
    cfg, ew = fs.config, fs.config.event_window_days
    names = ["recency_days", "tenure_days", "frequency", "monetary", "orders_total", "spend_total"]
    for d in cfg.windows_days:
        names += [f"orders_{d}d", f"spend_{d}d"]
    names += ["purchase_days", "avg_order_value", "ipi_mean_days"]
    names += list(fs.category_recency_columns().values())
    if fs.shape.has_events:
        names += [f"events_{slug(t)}_{ew}d" for t in cfg.event_types]
        names += [f"events_other_{ew}d", "days_since_last_event", f"abandoned_carts_{ew}d"]
    return [n for n in names if n in fs.names]


def not_maintained(fs: FeatureSet) -> list[str]:
    """The model features that keep base(S+1)'s values until the nightly batch (and why they cannot
    follow one customer's events: quintiles and segments rank the whole population; the others need
    history the vector does not hold)."""
    kept = set(maintained(fs))
    return [f.name for f in fs.model_features if f.name not in kept and f.name != "as_of"]


def _money(value: float) -> float:
    return round(value, _MONEY)


def _num(row: Mapping[str, object] | None, name: str, default: float = 0.0) -> float:
    if row is None:
        return default
    v = row.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return default
    return float(v)  # type: ignore[arg-type]


def _null(row: Mapping[str, object] | None, name: str) -> bool:
    v = None if row is None else row.get(name)
    return v is None or (isinstance(v, float) and math.isnan(v))


def fresh_vector(customer_id: str, base: Mapping[str, object] | None, act: DayActivity,
                 open_carts: Iterable[int], fs: FeatureSet, horizon: Horizon) -> dict[str, object] | None:
    """The customer's vector as of ``horizon.as_of``: ``base`` (base(S+1), None for a customer with
    no order before S) plus the day's ``act``. ``open_carts``: the times of the customer's carts
    base(S+1) counted abandoned that an order of day S could still rescue. None when the customer
    has no order at all (no snapshot row would exist either)."""
    new_orders = sorted((o[0], _money(o[1])) for o in act.orders.values())
    if base is None and not new_orders:
        return None
    out: dict[str, object] = dict(base) if base is not None else {n: None for n in fs.names}
    out["customer_id"] = customer_id
    out["as_of"] = horizon.as_of
    cfg = fs.config
    n_new, spend_new = len(new_orders), sum(a for _, a in new_orders)

    def ints(name: str, add: int) -> None:
        out[name] = int(_num(base, name)) + add

    def money(name: str, add: float) -> None:
        out[name] = _money(_num(base, name) + add)

    if n_new:
        out["recency_days"] = 1
        out["tenure_days"] = int(base["tenure_days"]) if base is not None else 1  # type: ignore[call-overload]
        for name in ("frequency", "orders_total", *(f"orders_{d}d" for d in cfg.windows_days)):
            ints(name, n_new)
        for name in ("monetary", "spend_total", *(f"spend_{d}d" for d in cfg.windows_days)):
            money(name, spend_new)
        ints("purchase_days", 1)  # base(S+1)'s last purchase day is before S
        out["avg_order_value"] = float(out["spend_total"]) / int(out["orders_total"])  # type: ignore[arg-type]
        days = int(out["purchase_days"])  # type: ignore[call-overload]
        # the mean of consecutive gaps is (last day - first day) / (days - 1)
        out["ipi_mean_days"] = ((int(out["tenure_days"]) - 1) / (days - 1)  # type: ignore[call-overload]
                                if days >= 2 else None)
        for cat, col in fs.category_recency_columns().items():
            if cat in act.categories:
                out[col] = 1.0
    if base is None:  # a first order today: the maintained counts start from zero, the rest is missing
        kept = set(maintained(fs))
        for spec in fs.model_features:
            if out.get(spec.name) is None and not spec.nullable and spec.name in kept:
                out[spec.name] = 0 if spec.dtype == "int64" else 0.0
    if fs.shape.has_events:
        ew = cfg.event_window_days
        counted = set(cfg.event_types)
        for t in cfg.event_types:
            ints(f"events_{slug(t)}_{ew}d", act.types.get(t, 0))
        ints(f"events_other_{ew}d", sum(n for t, n in act.types.items() if t not in counted))
        if act.events:
            out["days_since_last_event"] = 1.0
        elif _null(base, "days_since_last_event"):
            out["days_since_last_event"] = None
        out[f"abandoned_carts_{ew}d"] = int(_num(base, f"abandoned_carts_{ew}d")) + _cart_change(
            act, open_carts, [t for t, _ in new_orders], fs, horizon)
    return out


def _cart_change(act: DayActivity, open_carts: Iterable[int], order_us: list[int], fs: FeatureSet,
                 horizon: Horizon) -> int:
    """Abandoned carts the day adds (its own carts whose hours end before S+1 with no order in them)
    minus those it rescues (open carts with a day-S order within their hours). A cart is
    abandoned when no order of the customer falls in [cart, cart + hours), as the builder says."""
    hours_us = fs.config.abandoned_cart_hours * _HOUR_US
    judge_end = horizon.end_us - hours_us

    def rescued(cart: int) -> bool:
        return any(cart <= o < cart + hours_us for o in order_us)

    rescued_open = sum(1 for c in open_carts if rescued(c))
    added = sum(1 for c in act.carts if c < judge_end and not rescued(c))
    return added - rescued_open


def open_cart_window(as_of: date, fs: FeatureSet) -> tuple[int, int]:
    """[lo, hi) in us: the carts base(as_of + 1) judged that an order on ``as_of`` could rescue
    (built in ``features.build.open_carts``; here for the tests and the docs)."""
    cut = to_us(cutoff(as_of))
    nxt = cut + _DAY_US
    hours_us = fs.config.abandoned_cart_hours * _HOUR_US
    return max(nxt - fs.config.event_window_days * _DAY_US, cut - hours_us), min(cut, nxt - hours_us)
