"""Point-in-time labels: what happened in [as_of, as_of + H), for whom.

Pure Ibis functions: clean transaction lines (golden ``customer_id``) in, one row per
labelled unit out, ``as_of`` and the horizon explicit. The population only looks at
data before ``as_of``; the label only at [as_of, as_of + H). Windows are literal
instants, so DuckDB and Spark compare the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import ibis
import ibis.expr.datatypes as dt

from base.dates import cutoff
from features.build import MONEY_DECIMALS


def _at(day: date) -> ibis.TimestampScalar:
    return ibis.timestamp(cutoff(day))


def _window(tx: ibis.Table, start: date, end: date) -> ibis.Table:
    return tx.filter((tx.timestamp >= _at(start)) & (tx.timestamp < _at(end)))


def _buyers_before(tx: ibis.Table, as_of: date, since: date | None = None) -> ibis.Table:
    lines = tx.filter(tx.timestamp < _at(as_of))
    if since is not None:
        lines = lines.filter(lines.timestamp >= _at(since))
    return lines.select("customer_id").distinct()


def churn_labels(tx: ibis.Table, as_of: date, horizon_days: int, activity_window_days: int = 365) -> ibis.Table:
    """Customers with an order in the activity window before as_of; 1 = no order in the horizon."""
    population = _buyers_before(tx, as_of, as_of - timedelta(days=activity_window_days))
    later = _window(tx, as_of, as_of + timedelta(days=horizon_days)).select("customer_id").distinct()
    j = population.left_join(later.mutate(_bought=ibis.literal(1)), population.customer_id == later.customer_id)
    return j.select(population.customer_id, label=ibis.ifelse(j["_bought"].isnull(), 1, 0).cast("int64"))


def next_purchase_labels(tx: ibis.Table, as_of: date, horizon_days: int) -> ibis.Table:
    """Every customer with an order before as_of; 1 = at least one order in the horizon,
    ``orders`` = how many distinct orders."""
    population = _buyers_before(tx, as_of)
    w = _window(tx, as_of, as_of + timedelta(days=horizon_days))
    counts = w.group_by("customer_id").agg(orders=w.order_id.nunique())
    j = population.left_join(counts, population.customer_id == counts.customer_id)
    n = j.orders.fill_null(0).cast("int64")
    return j.select(population.customer_id, label=ibis.ifelse(n > 0, 1, 0).cast("int64"), orders=n)


def clv_labels(tx: ibis.Table, as_of: date, horizon_days: int) -> ibis.Table:
    """Every customer with an order before as_of; ``spend`` in the horizon (returns included)."""
    population = _buyers_before(tx, as_of)
    w = _window(tx, as_of, as_of + timedelta(days=horizon_days))
    spend = w.group_by("customer_id").agg(spend=w.amount.sum())
    j = population.left_join(spend, population.customer_id == spend.customer_id)
    return j.select(population.customer_id, spend=j.spend.fill_null(0.0).round(MONEY_DECIMALS).cast(dt.float64))


def cross_sell_labels(tx: ibis.Table, as_of: date, horizon_days: int, lookback_days: int,
                      categories: Sequence[str]) -> ibis.Table:
    """(customer, category) pairs where the customer, who has bought before as_of, did not
    buy the category in the lookback days; 1 = buys it in the horizon."""
    if not categories:
        raise ValueError("cross-sell needs categories")
    population = _buyers_before(tx, as_of)
    cats = ibis.memtable({"category": list(categories)})
    pairs = population.cross_join(cats)
    recent = _window(tx, as_of - timedelta(days=lookback_days), as_of)
    recent = recent.filter(recent.category.isin(list(categories))).select("customer_id", "category").distinct()
    candidates = pairs.anti_join(recent, [pairs.customer_id == recent.customer_id,
                                          pairs.category == recent.category])
    later = _window(tx, as_of, as_of + timedelta(days=horizon_days))
    later = later.filter(later.category.isin(list(categories))).select("customer_id", "category").distinct()
    later = later.mutate(_bought=ibis.literal(1))
    j = candidates.left_join(later, [candidates.customer_id == later.customer_id,
                                     candidates.category == later.category])
    return j.select(candidates.customer_id, candidates.category,
                    label=ibis.ifelse(j["_bought"].isnull(), 0, 1).cast("int64"))
