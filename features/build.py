"""The feature builder: source tables in, one row per customer out, as Ibis expressions.

``build_features`` is pure: it takes clean source tables (``sources.load``) with golden
customer ids, an explicit ``as_of`` date and a declared ``FeatureSet``, and returns an
Ibis table expression that DuckDB or Spark executes. Nothing at or after 00:00 of
``as_of`` is read: every source is filtered on ``timestamp < as_of`` first.

Windows are computed against literal cut-off instants (``as_of - N days``) so both
engines compare the same values; day counts use calendar dates (``date_diff``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

import ibis
import ibis.expr.datatypes as dt

from base.dates import cutoff
from features.definitions import SEGMENT_GRID, FeatureSet, slug

_DT = {"string": dt.string, "date": dt.date, "int64": dt.int64, "float64": dt.float64}


def _ts(d: datetime) -> ibis.TimestampScalar:
    return ibis.timestamp(d)


#: Money sums are rounded to a millionth: float addition in a different order (another
#: engine, another thread count) must not turn a refunded order's 0.0 into 1.8e-15, which
#: would flip a trend from 0 to +1 and make two runs differ.
MONEY_DECIMALS = 6


def _money(value: ibis.NumericValue) -> ibis.FloatingValue:
    return value.round(MONEY_DECIMALS)


def _ratio(num: ibis.NumericValue, den: ibis.NumericValue) -> ibis.FloatingValue:
    """num / den, 0 when den is not positive (a share of nothing is nothing)."""
    return ibis.ifelse(den > 0, num / den.nullif(0), 0.0)


def _lines(transactions: ibis.Table, cut: datetime, fs: FeatureSet) -> ibis.Table:
    """Order lines before the cut-off, only the columns the features read."""
    cols = ["customer_id", "order_id", "timestamp", "amount"]
    if fs.shape.categories:
        cols.append("category")
    if fs.shape.has_discount:
        cols.append("discount")
    if fs.shape.has_coupon_discount:
        cols.append("coupon_discount")
    tx = transactions.select(*cols)
    return tx.filter(tx.timestamp < _ts(cut))


def _orders(lines: ibis.Table) -> ibis.Table:
    """Order level: one row per (customer, order), at the time of its first line."""
    return lines.group_by(["customer_id", "order_id"]).agg(
        order_ts=lines.timestamp.min(), amount=_money(lines.amount.sum()))


def _customer_orders(orders: ibis.Table, cut: datetime, fs: FeatureSet) -> ibis.Table:
    cfg = fs.config
    since = {d: _ts(cut - timedelta(days=d)) for d in {*cfg.windows_days, cfg.rfm_window_days,
                                                       cfg.trend_window_days, 2 * cfg.trend_window_days}}
    o = orders
    n_orders = lambda where=None: o.order_id.count(where=where)
    total = lambda col, where=None: _money(o[col].sum(where=where).fill_null(0.0))
    t, t2 = since[cfg.trend_window_days], since[2 * cfg.trend_window_days]
    in_w = o.order_ts >= since[cfg.rfm_window_days]
    aggs = {
        "_last_date": o.order_ts.max().date(),
        "_first_date": o.order_ts.min().date(),
        "frequency": n_orders(in_w),
        "monetary": total("amount", in_w),
        "orders_total": n_orders(),
        "spend_total": total("amount"),
        "_orders_recent": n_orders(o.order_ts >= t),
        "_orders_prior": n_orders((o.order_ts >= t2) & (o.order_ts < t)),
        "_spend_recent": total("amount", o.order_ts >= t),
        "_spend_prior": total("amount", (o.order_ts >= t2) & (o.order_ts < t)),
    }
    for d in cfg.windows_days:
        aggs[f"orders_{d}d"] = n_orders(o.order_ts >= since[d])
        aggs[f"spend_{d}d"] = total("amount", o.order_ts >= since[d])
    return o.group_by("customer_id").agg(**aggs)


def _inter_purchase(orders: ibis.Table) -> ibis.Table:
    """Purchase days, and the mean and spread of the days between consecutive ones."""
    days = orders.select("customer_id", day=orders.order_ts.date()).distinct()
    w = ibis.window(group_by=days.customer_id, order_by=days.day)
    gaps = days.mutate(gap=days.day.delta(days.day.lag().over(w), unit="day"))
    return gaps.group_by("customer_id").agg(
        purchase_days=gaps.day.count(),
        ipi_mean_days=gaps.gap.mean(),
        ipi_std_days=gaps.gap.std(how="sample"),
    )


def _category_mix(lines: ibis.Table, as_of: date, cut: datetime, fs: FeatureSet) -> ibis.Table | None:
    """Category mix and discount shares of the RFM-window spend; days since the last
    purchase in each main category (all history).

    Two steps: (customer, category) sums over the lines, then one row per customer; the
    per-category conditions run on the small intermediate table."""
    shape, w = fs.shape, fs.config.rfm_window_days
    if not (shape.categories or shape.has_discount or shape.has_coupon_discount):
        return None
    in_w = lines.timestamp >= _ts(cut - timedelta(days=w))
    keys = ["customer_id", "category"] if shape.categories else ["customer_id"]
    sums: dict[str, ibis.Value] = {"_spend": _money(lines.amount.sum(where=in_w).fill_null(0.0)),
                                   "_lines_w": lines.amount.count(where=in_w)}
    if shape.categories:
        sums["_last"] = lines.timestamp.max()
    if shape.has_discount:
        sums["_discount"] = _money(lines.discount.sum(where=in_w).fill_null(0.0))
    if shape.has_coupon_discount:
        sums["_coupon"] = _money(lines.coupon_discount.sum(where=in_w).fill_null(0.0))
    by_cat = lines.group_by(keys).agg(**sums)
    aggs: dict[str, ibis.Value] = {"_spend": _money(by_cat["_spend"].sum())}
    if shape.categories:
        aggs[f"distinct_categories_{w}d"] = by_cat.category.count(
            where=(by_cat["_lines_w"] > 0) & by_cat.category.notnull())
        for i, cat in enumerate(shape.categories):
            aggs[f"_cat_{i}"] = _money(by_cat["_spend"].sum(where=by_cat.category == cat).fill_null(0.0))
            aggs[f"_last_{i}"] = by_cat["_last"].max(where=by_cat.category == cat).date()
    for extra in ("_discount", "_coupon"):
        if extra in sums:
            aggs[extra] = _money(by_cat[extra].sum())
    cust = by_cat.group_by("customer_id").agg(**aggs)
    out: dict[str, ibis.Value] = {}
    if shape.categories:
        out[f"distinct_categories_{w}d"] = cust[f"distinct_categories_{w}d"]
        for i, col in enumerate(fs.category_columns().values()):
            out[col] = _ratio(cust[f"_cat_{i}"], cust["_spend"])
        for i, col in enumerate(fs.category_recency_columns().values()):
            out[col] = ibis.date(as_of).delta(cust[f"_last_{i}"], unit="day").cast("float64")
    gross = cust["_spend"] + (cust["_discount"] if shape.has_discount else 0.0)
    if shape.has_discount:
        out[f"discount_share_{w}d"] = _ratio(cust["_discount"], gross)
    if shape.has_coupon_discount:
        out[f"coupon_share_{w}d"] = _ratio(cust["_coupon"], gross)
    return cust.select("customer_id", **out)


def _events(events: ibis.Table, orders: ibis.Table, as_of: date, cut: datetime, fs: FeatureSet) -> ibis.Table:
    cfg, ew = fs.config, fs.config.event_window_days
    start = _ts(cut - timedelta(days=ew))
    ev = events.filter(events.timestamp < _ts(cut))
    in_w = ev.timestamp >= start
    aggs: dict[str, ibis.Value] = {
        f"events_{t_slug}_{ew}d": ev.event_type.count(where=in_w & (ev.event_type == t))
        for t, t_slug in ((t, slug(t)) for t in cfg.event_types)
    }
    aggs[f"events_other_{ew}d"] = ev.event_type.count(where=in_w & ~ev.event_type.isin(cfg.event_types))
    aggs["_last_event"] = ev.timestamp.max().date()
    counts = ev.group_by("customer_id").agg(**aggs)
    counts = counts.mutate(
        days_since_last_event=ibis.date(as_of).delta(counts["_last_event"], unit="day").cast("float64")
    ).drop("_last_event")

    # Abandoned carts: add_to_cart with no order of the customer within H hours. Only carts
    # whose H hours ended before as_of are judged, so no order at or after as_of is needed.
    hours = cfg.abandoned_cart_hours
    carts = ev.filter(in_w & (ev.event_type == "add_to_cart")
                      & (ev.timestamp < _ts(cut - timedelta(hours=hours))))
    recent_orders = orders.filter(orders.order_ts >= start)
    timeline = carts.select("customer_id", ts=carts.timestamp, is_order=ibis.literal(0)).union(
        recent_orders.select("customer_id", ts=recent_orders.order_ts, is_order=ibis.literal(1)),
        distinct=False,
    )
    ahead = ibis.window(group_by=timeline.customer_id, order_by=[timeline.ts, timeline.is_order],
                        preceding=0, following=None)
    next_order = ibis.ifelse(timeline.is_order == 1, timeline.ts, ibis.null(dt.timestamp)).min().over(ahead)
    marked = timeline.mutate(_next=next_order).filter(ibis._.is_order == 0)
    abandoned = marked.filter(marked["_next"].isnull() | (marked["_next"] >= marked.ts + ibis.interval(hours=hours)))
    ab = abandoned.group_by("customer_id").agg(**{f"abandoned_carts_{ew}d": abandoned.ts.count()})
    joined = counts.outer_join(ab, counts.customer_id == ab.customer_id)
    return joined.select(
        customer_id=ibis.coalesce(counts.customer_id, ab.customer_id),
        **{c: counts[c] for c in counts.columns if c != "customer_id"},
        **{f"abandoned_carts_{ew}d": ab[f"abandoned_carts_{ew}d"]},
    )


def _campaigns(contacts: ibis.Table, responses: ibis.Table | None, as_of: date, cut: datetime,
               fs: FeatureSet) -> ibis.Table:
    w = fs.config.rfm_window_days
    start = _ts(cut - timedelta(days=w))
    c = contacts.filter(contacts.timestamp < _ts(cut))
    agg = c.group_by("customer_id").agg(**{
        f"contacts_{w}d": c.campaign_id.count(where=c.timestamp >= start),
        "_last_contact": c.timestamp.max().date(),
    })
    agg = agg.mutate(
        days_since_last_contact=ibis.date(as_of).delta(agg["_last_contact"], unit="day").cast("float64")
    ).drop("_last_contact")
    if responses is None:
        return agg
    r = responses.filter((responses.timestamp < _ts(cut)) & (responses.timestamp >= start))
    ragg = r.group_by("customer_id").agg(**{f"responses_{w}d": r.campaign_id.count()})
    j = agg.outer_join(ragg, agg.customer_id == ragg.customer_id)
    n_resp = j[f"responses_{w}d"].fill_null(0)
    n_cont = j[f"contacts_{w}d"].fill_null(0)
    return j.select(
        customer_id=ibis.coalesce(agg.customer_id, ragg.customer_id),
        **{f"contacts_{w}d": n_cont, "days_since_last_contact": j.days_since_last_contact,
           f"responses_{w}d": n_resp,
           f"response_rate_{w}d": ibis.ifelse(n_cont > 0, n_resp / n_cont.nullif(0), ibis.null(dt.float64))},
    )


def _attributes(customers: ibis.Table, cut: datetime, fs: FeatureSet) -> ibis.Table:
    """Attributes known before as_of; per attribute the most recent non-null value."""
    cols = fs.attribute_columns()
    cu = customers
    if "updated_at" in cu.columns:
        cu = cu.filter(cu.updated_at.isnull() | (cu.updated_at < _ts(cut)))
        recency = cu.updated_at.fill_null(ibis.timestamp(datetime(1900, 1, 1)))
    else:
        recency = ibis.timestamp(datetime(1900, 1, 1))
    tiebreak = [cu["_record"]] if "_record" in cu.columns else []
    tiebreak += [cu[a].cast("string").fill_null("") for a in cols]
    w = ibis.window(group_by=cu.customer_id, order_by=[recency, *tiebreak])
    ranked = cu.mutate(_rank=ibis.row_number().over(w))
    numeric = dict(fs.shape.attributes)
    return ranked.group_by("customer_id").agg(**{
        col: (ranked[a].cast("float64") if numeric[a] else ranked[a].cast("string")).argmax(
            ranked["_rank"], where=ranked[a].notnull())
        for a, col in cols.items()
    })


def _rfm(cust: ibis.Table) -> ibis.Table:
    """Quintile scores 1..5 (5 best) with ties sharing a score, and the named segment.

    score = 1 + floor(5 * rank / n), rank = number of customers strictly worse (SQL RANK - 1),
    so the scores are deterministic on every engine whatever the row order.
    """
    n = cust.customer_id.count().over(ibis.window())

    def score(order_key: ibis.Value) -> ibis.IntegerValue:
        rank = ibis.rank().over(ibis.window(order_by=order_key))
        return (1 + (rank * 5 / n).floor()).cast("int64")

    scored = cust.mutate(
        r_score=score(ibis.desc(cust.recency_days)),
        f_score=score(cust.frequency),
        m_score=score(cust.monetary.round(2)),
    )
    fm = ((scored.f_score + scored.m_score + 1) / 2).floor().cast("int64")
    key = scored.r_score * 10 + fm
    segment = ibis.cases(*[(key == r * 10 + i + 1, name) for r, row in SEGMENT_GRID.items()
                          for i, name in enumerate(row)])
    return scored.mutate(rfm_segment=segment)


CORE_COLUMNS = ["customer_id", "as_of", "recency_days", "tenure_days", "frequency", "monetary",
                "r_score", "f_score", "m_score", "rfm_segment"]


def _customers(lines: ibis.Table, as_of: date, fs: FeatureSet) -> tuple[ibis.Table, ibis.Table]:
    """Orders and the customer-level order features (core, RFM, behaviour, mix)."""
    cut = cutoff(as_of)
    orders = _orders(lines)
    cust = _customer_orders(orders, cut, fs)
    asof = ibis.date(as_of)
    cust = cust.mutate(
        recency_days=asof.delta(cust["_last_date"], unit="day"),
        tenure_days=asof.delta(cust["_first_date"], unit="day"),
    )
    cust = cust.mutate(
        avg_order_value=cust.spend_total / cust.orders_total,
        orders_trend=ibis.ifelse(
            (cust["_orders_recent"] + cust["_orders_prior"]) > 0,
            (cust["_orders_recent"] - cust["_orders_prior"])
            / (cust["_orders_recent"] + cust["_orders_prior"]).nullif(0),
            0.0),
        spend_trend=ibis.ifelse(
            (cust["_spend_recent"].abs() + cust["_spend_prior"].abs()) > 0,
            (cust["_spend_recent"] - cust["_spend_prior"])
            / (cust["_spend_recent"].abs() + cust["_spend_prior"].abs()).nullif(0),
            0.0),
    )
    return orders, _rfm(cust)


def core_features(transactions: ibis.Table, as_of: date, fs: FeatureSet) -> ibis.Table:
    """Only the core contract (recency, tenure, frequency, monetary, scores, segment)."""
    lines = _lines(transactions, cutoff(as_of), fs)
    _, cust = _customers(lines, as_of, fs)
    return cust.select(
        *[ibis.date(as_of).name(c) if c == "as_of" else cust[c].cast(_DT[fs.dtypes[c]]) for c in CORE_COLUMNS]
    ).order_by("customer_id")


def build_features(tables: Mapping[str, ibis.Table], as_of: date, fs: FeatureSet) -> ibis.Table:
    """One row per customer with at least one order before ``as_of``, columns of ``fs``.

    ``tables`` are clean source tables keyed by golden ``customer_id``; ``transactions``
    is required, ``events``, ``contacts``, ``responses`` and ``customers`` are used when
    the feature set declares their groups.
    """
    cut = cutoff(as_of)
    tx = tables["transactions"]
    lines = _lines(tx, cut, fs)
    orders, cust = _customers(lines, as_of, fs)
    asof = ibis.date(as_of)

    parts: list[ibis.Table] = [_inter_purchase(orders)]
    mix = _category_mix(lines, as_of, cut, fs)
    if mix is not None:
        parts.append(mix)
    if fs.shape.has_events:
        parts.append(_events(tables["events"], orders, as_of, cut, fs))
    if fs.shape.has_contacts:
        parts.append(_campaigns(tables["contacts"], tables.get("responses") if fs.shape.has_responses else None,
                                as_of, cut, fs))
    if fs.shape.attributes:
        parts.append(_attributes(tables["customers"], cut, fs))

    result = cust
    for part in parts:
        result = result.left_join(part, result.customer_id == part.customer_id).drop("customer_id_right")

    # Fill what "no activity" means, cast to the declared dtypes, in the declared order.
    out: dict[str, ibis.Value] = {}
    for spec in fs.features:
        if spec.name == "as_of":
            out["as_of"] = asof
            continue
        col = result[spec.name]
        if not spec.nullable and spec.dtype in ("int64", "float64"):
            col = col.fill_null(0)
        out[spec.name] = col.cast(_DT[spec.dtype])
    return result.select(**out).order_by("customer_id")


def data_before(tables: Mapping[str, ibis.Table], as_of: date) -> dict[str, ibis.Table]:
    """``tables`` as they stood at 00:00 of ``as_of``: rows timed before it (attributes updated
    before it or undated). ``build_features(data_before(t, S), S + 1, fs)`` is base(S+1) of
    ``features.fresh``: tomorrow's windows over what is known this morning."""
    cut = _ts(cutoff(as_of))
    out: dict[str, ibis.Table] = {}
    for name, table in tables.items():
        if "timestamp" in table.columns:
            table = table.filter(table.timestamp < cut)
        elif "updated_at" in table.columns:
            table = table.filter(table.updated_at.isnull() | (table.updated_at < cut))
        out[name] = table
    return out


def open_carts(tables: Mapping[str, ibis.Table], as_of: date, fs: FeatureSet) -> ibis.Table | None:
    """The carts base(as_of + 1) counts abandoned that an order on ``as_of`` could still rescue
    (customer_id, timestamp): add_to_cart events in the last ``abandoned_cart_hours`` before
    ``as_of`` (and inside tomorrow's event window and judged by it) with no order of the customer
    between the cart and 00:00 of ``as_of``. None without events."""
    if not fs.shape.has_events:
        return None
    cfg = fs.config
    cut = cutoff(as_of)
    nxt = cut + timedelta(days=1)
    lo = max(nxt - timedelta(days=cfg.event_window_days), cut - timedelta(hours=cfg.abandoned_cart_hours))
    hi = min(cut, nxt - timedelta(hours=cfg.abandoned_cart_hours))
    ev = tables["events"]
    carts = ev.filter((ev.event_type == "add_to_cart") & (ev.timestamp >= _ts(lo)) & (ev.timestamp < _ts(hi)))
    carts = carts.select(customer_id=carts.customer_id.cast("string"), timestamp=carts.timestamp)
    orders = _orders(_lines(tables["transactions"], cut, fs))
    orders = orders.filter(orders.order_ts >= _ts(lo)).select(
        order_customer=orders.customer_id.cast("string"), order_ts=orders.order_ts)
    kept = carts.anti_join(orders, [carts.customer_id == orders.order_customer,
                                    orders.order_ts >= carts.timestamp])
    return kept.select("customer_id", "timestamp").order_by(["customer_id", "timestamp"])
