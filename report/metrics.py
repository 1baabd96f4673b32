"""Customer-value metrics for the report: tables in, tables or numbers out, ``as_of`` explicit.

Every function reads ``daily`` (one row per customer and day with an order: ``customer_id``,
``day``, ``revenue``, ``orders``) built from transactions strictly before ``as_of``, or
the nightly batch's outputs for that as_of, so the report's figures are the batch's.

Definitions (the page repeats them next to the numbers):

* last period ``[as_of - P, as_of)``, previous period ``[as_of - 2P, as_of - P)``;
* active customers: at least one order in the last period;
* churn rate: share of the customers active in the previous period with no order in the
  last one; retention rate = 1 - churn rate;
* revenue and ARPU: revenue of the last period, and that over its active customers;
* top-20 % share: revenue of the top 20 % of the last period's buyers (by their revenue in
  it, rounded up) over the period's revenue;
* acquisition cohort: the month of a customer's first order; retention in month m: share
  of the cohort with an order in the m-th calendar month after it (complete months only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Kpis:
    as_of: date
    period_days: int
    active_customers: int
    churn_rate: float
    retention_rate: float
    revenue: float
    arpu: float
    clv_mean: float
    clv_median: float
    top20_revenue_share: float
    customers_scored: int


def _days(daily: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(daily["day"]).dt.normalize()


def check_before(daily: pd.DataFrame, as_of: date) -> None:
    """Nothing computed for ``as_of`` may read that day or later."""
    if len(daily) and _days(daily).max() >= pd.Timestamp(as_of):
        raise ValueError(f"daily revenue has days on or after as_of {as_of}: cut the data before computing")


def period_revenue(daily: pd.DataFrame, start: date, end: date) -> pd.Series:
    """Revenue per customer with an order in ``[start, end)``."""
    d = _days(daily)
    inside = daily[(d >= pd.Timestamp(start)) & (d < pd.Timestamp(end))]
    return inside.groupby("customer_id", sort=True)["revenue"].sum()


def kpis(daily: pd.DataFrame, scores: pd.DataFrame, as_of: date, period_days: int = 90) -> Kpis:
    check_before(daily, as_of)
    p = timedelta(days=period_days)
    last = period_revenue(daily, as_of - p, as_of)
    prev = period_revenue(daily, as_of - 2 * p, as_of - p)
    churned = (~prev.index.isin(last.index)).sum()
    churn = float(churned / len(prev)) if len(prev) else float("nan")
    revenue = float(last.sum())
    clv = scores["clv"].dropna().to_numpy(dtype="float64") if "clv" in scores else np.empty(0)
    return Kpis(as_of=as_of, period_days=period_days, active_customers=len(last), churn_rate=churn,
                retention_rate=1.0 - churn if len(prev) else float("nan"), revenue=revenue,
                arpu=revenue / len(last) if len(last) else float("nan"),
                clv_mean=float(clv.mean()) if len(clv) else float("nan"),
                clv_median=float(np.median(clv)) if len(clv) else float("nan"),
                top20_revenue_share=top_share(last.to_numpy(dtype="float64"), 0.2),
                customers_scored=len(scores))


def top_share(values: np.ndarray, top: float) -> float:
    """Share of the total held by the top ``top`` fraction of the values (count rounded up)."""
    if len(values) == 0 or values.sum() == 0:
        return float("nan")
    k = math.ceil(top * len(values))
    return float(np.sort(values)[::-1][:k].sum() / values.sum())


def cohorts(daily: pd.DataFrame, as_of: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Acquisition cohorts by month of first order.

    Returns (retention, revenue, size): retention[cohort, m] is the share of the cohort with
    an order in calendar month cohort + m, revenue[cohort, m] the cohort's revenue in it;
    only months that ended before ``as_of`` count. Indexes are ``YYYY-MM`` strings.
    """
    check_before(daily, as_of)
    d = _days(daily)
    # months as integers (year * 12 + month - 1): offsets are plain differences
    frame = pd.DataFrame({"customer_id": daily["customer_id"].to_numpy(),
                          "month": (d.dt.year * 12 + d.dt.month - 1).to_numpy(dtype="int64"),
                          "revenue": daily["revenue"].to_numpy(dtype="float64")})
    frame["cohort"] = frame.groupby("customer_id")["month"].transform("min")
    last_complete = as_of.year * 12 + as_of.month - 2  # the month before as_of's
    frame = frame[frame["month"] <= last_complete]
    frame["m"] = frame["month"] - frame["cohort"]
    first = frame.groupby("customer_id")["cohort"].first()
    size = first.value_counts().sort_index()
    months = range(int(last_complete - size.index.min()) + 1) if len(size) else range(0)
    active = frame.groupby(["cohort", "m"])["customer_id"].nunique().unstack("m").reindex(index=size.index,
                                                                                       columns=months)
    revenue = frame.groupby(["cohort", "m"])["revenue"].sum().unstack("m").reindex(index=size.index,
                                                                                  columns=months)
    # months a cohort could not have reached yet stay empty; months it reached with no buyer are 0
    reached = np.asarray(months)[None, :] <= (last_complete - size.index.to_numpy())[:, None]
    retention = active.div(size, axis=0).mask(reached & active.isna().to_numpy(), 0.0)
    revenue = revenue.mask(reached & revenue.isna().to_numpy(), 0.0)
    label = {c: f"{c // 12:04d}-{c % 12 + 1:02d}" for c in size.index}
    return retention.rename(index=label), revenue.rename(index=label), size.rename(index=label)


def segments(scores: pd.DataFrame, daily: pd.DataFrame, as_of: date, period_days: int = 90) -> pd.DataFrame:
    """Per RFM segment of the batch: customers, share of the last period's revenue, mean CLV."""
    last = period_revenue(daily, as_of - timedelta(days=period_days), as_of)
    s = scores[["customer_id", "rfm_segment", "clv"]].copy()
    s["revenue"] = s["customer_id"].map(last).fillna(0.0)
    g = s.groupby(s["rfm_segment"].fillna("(none)"), sort=True).agg(
        customers=("customer_id", "size"), revenue=("revenue", "sum"), clv_mean=("clv", "mean"))
    total = g["revenue"].sum()
    g["revenue_share"] = g["revenue"] / total if total else np.nan
    return g.sort_values("customers", ascending=False)


def migration_matrix(migration: pd.DataFrame) -> pd.DataFrame:
    """``segment_migration.parquet`` as a from x to table of customer counts."""
    if migration.empty:
        return pd.DataFrame()
    return migration.pivot_table(index="from_segment", columns="to_segment", values="customers", aggfunc="sum",
                                 fill_value=0)


def pareto(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share of customers (best first) against cumulative share of the total."""
    v = np.sort(np.asarray(values, dtype="float64")[np.isfinite(values)])[::-1]
    if len(v) == 0 or v.sum() <= 0:
        return np.array([0.0]), np.array([0.0])
    x = np.arange(0, len(v) + 1) / len(v)
    y = np.r_[0.0, np.cumsum(v) / v.sum()]
    return x, y


def campaign_effect(daily: pd.DataFrame, contacts: pd.DataFrame, as_of: date, *, weeks: int = 4,
                    base_days: int = 90) -> pd.DataFrame:
    """For each campaign that started at least ``weeks`` weeks before ``as_of``: mean spend
    per customer in the ``weeks`` after its start, contacted vs not contacted, among the
    customers who bought in the ``base_days`` before it, with a 95 % interval on the
    difference (Welch, normal approximation). Observational: contacts were not random."""
    check_before(daily, as_of)
    rows = []
    if contacts.empty:
        return pd.DataFrame(columns=["campaign_id", "start", "contacted", "not_contacted", "spend_contacted",
                                     "spend_not_contacted", "difference", "ci_low", "ci_high"])
    ts = pd.to_datetime(contacts["timestamp"])
    c = contacts.assign(_ts=ts)[ts < pd.Timestamp(as_of)]
    starts = c.groupby("campaign_id")["_ts"].min().dt.normalize()
    for campaign, start in starts.sort_values().items():
        end = start + pd.Timedelta(weeks=weeks)
        if end > pd.Timestamp(as_of):
            continue
        base = period_revenue(daily, (start - pd.Timedelta(days=base_days)).date(), start.date()).index
        after = period_revenue(daily, start.date(), end.date())
        spend = pd.Series(after.reindex(base).fillna(0.0).to_numpy(), index=base)
        hit = base.isin(c.loc[c["campaign_id"] == campaign, "customer_id"].unique())
        a, b = spend[hit].to_numpy(), spend[~hit].to_numpy()
        if len(a) < 2 or len(b) < 2:
            continue
        diff = a.mean() - b.mean()
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        rows.append({"campaign_id": str(campaign), "start": start.date(), "contacted": len(a),
                     "not_contacted": len(b), "spend_contacted": a.mean(), "spend_not_contacted": b.mean(),
                     "difference": diff, "ci_low": diff - 1.96 * se, "ci_high": diff + 1.96 * se})
    return pd.DataFrame(rows)


def offer_mix(offers: pd.DataFrame) -> pd.DataFrame:
    """Customers per best offer (rank 1), with its mean expected value."""
    best = offers[offers["rank"] == 1]
    return (best.groupby(["offer_id", "type"], sort=True)
            .agg(customers=("customer_id", "size"), expected_value=("expected_value", "mean"))
            .reset_index().sort_values("customers", ascending=False))


def offer_value_by_segment(offers: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Mean expected value of the best offer, offer x RFM segment."""
    best = offers[offers["rank"] == 1].merge(scores[["customer_id", "rfm_segment"]], on="customer_id")
    return best.pivot_table(index="offer_id", columns="rfm_segment", values="expected_value", aggfunc="mean")
