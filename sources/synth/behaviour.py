"""Persons and what they do: latent parameters, account holdings, acquisition and category
tastes; orders, basket lines and returns; campaign contacts and responses; behavioural events
(views, carts, purchases, email opens / clicks, support tickets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sources.synth.arrays import _categorical, _lengths_to_index, _sorted_unique
from sources.synth.entities import _Persons, _Records
from sources.synth.params import (
    _BASE_CATEGORY_SHARE,
    _CATEGORY_ECONOMICS,
    _ONLINE_HOURS,
    _REGION_SHARE,
    _STORE_HOURS,
    _WEEKEND_STORE_BOOST,
    CART,
    CATEGORIES,
    CLICK,
    CRM,
    MINUTE,
    ONLINE_APP,
    ONLINE_WEB,
    OPEN,
    PURCHASE,
    SEGMENTS,
    STORE,
    TICKET,
    VIEW,
    SynthParams,
)
from sources.synth.world import _Window, _World


# --------------------------------------------------------------------- persons
def _persons(rng: np.random.Generator, world: _World, first: int, n: int) -> _Persons:
    prm, win = world.params, world.window
    segment = _categorical(rng, [s for s, _ in SEGMENTS.values()], n)
    base = rng.random(n) < prm.existing_base_share
    rate = rng.gamma(prm.purchase_rate_shape, 1 / prm.mean_days_between_orders / prm.purchase_rate_shape, n)
    dropout_rate = rng.gamma(prm.dropout_rate_shape, 1 / prm.mean_lifetime_days / prm.dropout_rate_shape, n)
    has = _holdings(rng, prm, n)
    chan_w = rng.gamma(np.array([3.5, 0.8, 0.9]), size=(n, 3))
    chan_w *= np.stack([has["pos1"], has["web"], has["app"]], axis=1)
    primary = np.argmax(chan_w, axis=1)
    acq = _acquisition(rng, win, prm, base, primary)
    lifetime = rng.exponential(1 / dropout_rate)
    dropout = np.where(acq + lifetime < win.days, acq + lifetime, np.inf)
    pref, adopt = _category_tastes(rng, prm, segment, acq)
    region = _categorical(rng, _REGION_SHARE, n)
    home_store = world.stores.first[region] + (rng.random(n) * world.stores.count[region]).astype(np.int64)
    p = _Persons(
        gid=np.arange(first, first + n, dtype=np.int64), segment=segment, base=base, acq=acq, dropout=dropout,
        rate=rate, dropout_rate=dropout_rate, basket=rng.gamma(4.0, 0.25, n), has=has, chan_w=chan_w,
        primary=primary, pref=pref, adopt=adopt, region=region, home_store=home_store,
        birth_year=np.clip(np.round(rng.normal(1979, 15, n)), 1935, 2007).astype(np.int64),
        gender=_categorical(rng, (0.51, 0.47, 0.02), n),
        # heterogeneous, and higher for frequent buyers
        response_p=np.clip(rng.beta(1.2, 1.2 / prm.mean_response_propensity, n)
                           * np.sqrt(rate * prm.mean_days_between_orders).clip(0.3, 3.0), 0, 0.9),
        open_p=rng.beta(2.0, 5.0, n),
        days=float(win.days),
    )
    return p


def _holdings(rng: np.random.Generator, prm: SynthParams, n: int) -> dict[str, np.ndarray]:
    pos = rng.random(n) < prm.pos_share
    web = rng.random(n) < prm.web_share
    app = rng.random(n) < prm.app_share
    pos |= ~(web | app)  # every person can buy somewhere: no account at all means a store card
    crm = rng.random(n) < prm.crm_share
    return {"pos1": pos, "pos2": pos & (rng.random(n) < prm.second_card_share), "web": web, "app": app,
            "crm1": crm, "crm2": crm & (rng.random(n) < prm.duplicate_crm_share)}


def _acquisition(rng: np.random.Generator, win: _Window, prm: SynthParams, base: np.ndarray,
                 primary: np.ndarray) -> np.ndarray:
    """Acquisition day: 0 for the existing base, else in a monthly cohort (cohorts grow),
    at a time of day that suits the channel of the first order."""
    n_months = len(win.month_start) - 1
    month = _categorical(rng, (1 + prm.monthly_cohort_growth) ** np.arange(n_months), len(base))
    lo, hi = win.month_start[month], win.month_start[month + 1]
    day = np.floor(lo + rng.random(len(base)) * (hi - lo))
    acq = day + _time_of_day(rng, primary)
    return np.where(base, 0.0, np.minimum(acq, win.days - MINUTE))


def _category_tastes(rng: np.random.Generator, prm: SynthParams, segment: np.ndarray,
                     acq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preferences around the segment profile; the two favourite categories are bought from
    the start, the others adopted later (sooner when liked more): cross-sell happens."""
    profiles = np.tile(np.asarray(_BASE_CATEGORY_SHARE), (len(SEGMENTS), 1))
    for s, (_, boosts) in enumerate(SEGMENTS.values()):
        for cat, boost in boosts.items():
            profiles[s, CATEGORIES.index(cat)] *= boost
    profiles /= profiles.sum(axis=1, keepdims=True)
    pref = rng.gamma(20.0 * profiles[segment] + 0.02)
    pref /= pref.sum(axis=1, keepdims=True)
    scale = prm.category_adoption_days / np.sqrt(len(CATEGORIES) * pref)
    adopt = acq[:, None] + rng.exponential(scale)
    core = np.argsort(-pref, axis=1)[:, :2]
    np.put_along_axis(adopt, core, -1.0, axis=1)
    return pref.astype(np.float32), adopt


def _time_of_day(rng: np.random.Generator, channel: np.ndarray) -> np.ndarray:
    """Fraction of a day: store orders in opening hours, online ones peaking in the evening."""
    store = np.cumsum(_STORE_HOURS) / np.sum(_STORE_HOURS)
    online = np.cumsum(_ONLINE_HOURS) / np.sum(_ONLINE_HOURS)
    u = rng.random(len(channel))
    hour = np.where(channel == STORE, np.searchsorted(store, u, side="right"),
                    np.searchsorted(online, u, side="right")).clip(0, 23)
    return (hour + rng.random(len(channel))) / 24.0


# --------------------------------------------------------------------- orders
_ORDER_FIELDS = ("person", "t", "channel", "record", "campaign", "store")


@dataclass
class _Orders:
    person: np.ndarray
    t: np.ndarray
    channel: np.ndarray
    record: np.ndarray
    campaign: np.ndarray  # -1, or the campaign whose coupon the order redeems
    store: np.ndarray  # store index, -1 online

    def take(self, idx: np.ndarray) -> _Orders:
        return _Orders(*(getattr(self, f)[idx] for f in _ORDER_FIELDS))


def _place_orders(rng: np.random.Generator, world: _World, p: _Persons, r: _Records, person: np.ndarray,
                  day: np.ndarray, campaign: np.ndarray) -> tuple[_Orders, np.ndarray]:
    """Put orders wanted on given days into a channel the person holds an account for (store
    weekends boosted), at a time of day suiting it; drop those falling outside the person's
    life or before that account existed."""
    d = np.floor(day).astype(np.int64).clip(0, world.window.days - 1)
    w = p.chan_w[person].copy()
    w[:, STORE] *= np.where(world.window.weekend[d], _WEEKEND_STORE_BOOST, 1.0)
    created = np.stack([r.created_of(s, person) for s in ("pos1", "web", "app")], axis=1)
    w *= created <= d[:, None] + 1  # accounts opened by the end of that day
    cum = np.cumsum(w, axis=1)
    pick = (rng.random(len(person))[:, None] * cum[:, -1:] >= cum).sum(axis=1).clip(0, 2)
    channel = np.where(cum[:, -1] > 0, pick, p.primary[person])
    t = d + _time_of_day(rng, channel)
    pos2 = r.of["pos2"][person]
    use_pos2 = (pos2 >= 0) & (t >= r.created[np.maximum(pos2, 0)])
    record = np.select([channel == ONLINE_WEB, channel == ONLINE_APP, use_pos2],
                       [r.of["web"][person], r.of["app"][person], pos2], r.of["pos1"][person])
    ok = (record >= 0) & (t > p.acq[person]) & (t < p.alive_until[person])
    ok &= t >= r.created[np.maximum(record, 0)]
    store = _store_of(rng, world, p, person)
    store = np.where(channel == STORE, store, -1)
    keep = np.flatnonzero(ok)
    return _Orders(person, t, channel, record, campaign, store).take(keep), keep


def _store_of(rng: np.random.Generator, world: _World, p: _Persons, person: np.ndarray) -> np.ndarray:
    """Mostly the home store, sometimes another in the region, rarely anywhere."""
    u = rng.random(len(person))
    region = p.region[person]
    local = world.stores.first[region] + (rng.random(len(person)) * world.stores.count[region]).astype(int)
    anywhere = rng.integers(0, len(world.stores.region), len(person))
    return np.where(u < 0.8, p.home_store[person], np.where(u < 0.96, local, anywhere))


def _regular_orders(rng: np.random.Generator, world: _World, p: _Persons, r: _Records) -> _Orders:
    """A Poisson process per person over its life, thinned by the seasonal factor."""
    fmax = float(world.window.day_factor.max())
    span = np.maximum(p.alive_until - p.acq, 0)
    count = rng.poisson(p.rate * fmax * span)
    person = _lengths_to_index(count)
    day = p.acq[person] + rng.random(len(person)) * span[person]
    d = np.floor(day).astype(np.int64).clip(0, world.window.days - 1)
    keep = rng.random(len(person)) * fmax < world.window.day_factor[d]
    person, day = person[keep], day[keep]
    return _place_orders(rng, world, p, r, person, day, np.full(len(person), -1, dtype=np.int64))[0]


def _first_orders(world: _World, p: _Persons, r: _Records) -> _Orders:
    """New customers are acquired by their first order, in their primary channel."""
    person = np.flatnonzero(~p.base)
    channel = p.primary[person]
    record = np.select([channel == ONLINE_WEB, channel == ONLINE_APP],
                       [r.of["web"][person], r.of["app"][person]], r.of["pos1"][person])
    store = np.where(channel == STORE, p.home_store[person], -1)
    return _Orders(person, p.acq[person], channel, record, np.full(len(person), -1, dtype=np.int64), store)


def _concat_orders_unsorted(*parts: _Orders) -> _Orders:
    return _Orders(*(np.concatenate([getattr(o, f) for o in parts]) for f in _ORDER_FIELDS))


def _concat_orders(parts: list[_Orders]) -> _Orders:
    """All orders in time order, so that their lines come out in time order too."""
    merged = _concat_orders_unsorted(*parts)
    return merged.take(np.argsort(merged.t, kind="stable"))


# ------------------------------------------------------------ campaigns
@dataclass
class _Contacts:
    record: np.ndarray
    person: np.ndarray
    campaign: np.ndarray
    t: np.ndarray
    channel: np.ndarray


def _contacts(rng: np.random.Generator, world: _World, p: _Persons, r: _Records,
              has_email: np.ndarray) -> _Contacts:
    """Each campaign targets part of the CRM records that exist by then, favouring persons
    still buying (a marketer's selection based on recent activity)."""
    cmp = world.campaigns
    crm = np.flatnonzero(r.system == CRM)
    person = r.person[crm]
    alive = (p.acq[person][:, None] <= cmp.day[None, :]) & (p.dropout[person][:, None] > cmp.day[None, :])
    prob = cmp.reach[None, :] * np.where(alive, 1.4, 0.6)
    hit = (rng.random(prob.shape) < prob) & (r.created[crm][:, None] <= cmp.day[None, :])
    rec_i, cmp_i = np.nonzero(hit)
    record = crm[rec_i]
    channel = cmp.channel[cmp_i]
    # no email address on file: the campaign goes by post
    channel = np.where((channel == 0) & ~has_email[record], 2, channel)
    t = cmp.day[cmp_i] + (6 + rng.random(len(record)) * 6) / 24  # sent in the morning
    return _Contacts(record, r.person[record], cmp_i, t, channel)


def _responses(rng: np.random.Generator, world: _World, p: _Persons, r: _Records,
               c: _Contacts) -> tuple[np.ndarray, np.ndarray, _Orders]:
    """Responses of alive persons with their propensity, each with a same-day coupon order;
    at most one per person and campaign (duplicate CRM records are contacted twice)."""
    alive = (p.acq[c.person] <= c.t) & (p.dropout[c.person] > c.t)
    hit = np.flatnonzero(alive & (rng.random(len(c.t)) < p.response_p[c.person]))
    day = np.floor(c.t[hit]) + rng.integers(1, 14, len(hit))
    order = np.lexsort((day, c.campaign[hit], c.person[hit]))
    hit, day = hit[order], day[order]
    first = np.ones(len(hit), dtype=bool)
    first[1:] = (c.person[hit][1:] != c.person[hit][:-1]) | (c.campaign[hit][1:] != c.campaign[hit][:-1])
    hit, day = hit[first], day[first]
    within = day < world.window.days
    hit, day = hit[within], day[within]
    placed, kept = _place_orders(rng, world, p, r, c.person[hit], day, c.campaign[hit])
    # a response exists only with its order (an order outside the person's life is dropped)
    return hit[kept], placed.t, placed


# ------------------------------------------------------------------ lines
@dataclass
class _Lines:
    order: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray
    discount: np.ndarray
    coupon: np.ndarray


def _lines(rng: np.random.Generator, world: _World, p: _Persons, o: _Orders) -> _Lines:
    """Baskets of 1 + Poisson lines; categories drawn from the adopted ones by preference,
    products by popularity; a product appears once per order."""
    cat = world.catalog
    n_lines = 1 + rng.poisson(world.params.extra_lines_per_order * p.basket[o.person]).clip(0, 40)
    order = _lengths_to_index(n_lines)
    category = _line_categories(rng, p, o.person[order], o.t[order])
    product = np.searchsorted(cat.popularity_key, category + rng.random(len(order)), side="right")
    product = product.clip(0, len(cat.category) - 1)
    key = _sorted_unique(order.astype(np.int64) * len(cat.category) + product)
    order, product = key // len(cat.category), key % len(cat.category)
    category = cat.category[product]
    extra = np.asarray([e for _, _, e, _ in _CATEGORY_ECONOMICS.values()])[category]
    weighed_share = np.asarray([w for _, _, _, w in _CATEGORY_ECONOMICS.values()])[category]
    weighed = rng.random(len(order)) < weighed_share
    quantity = np.where(weighed, np.round(np.clip(rng.lognormal(np.log(0.6), 0.5, len(order)), 0.05, 5), 3),
                        1.0 + rng.poisson(extra))
    gross = np.round(cat.price[product] * quantity, 2)
    promo_rate = np.where(rng.random(len(order)) < 0.12, rng.uniform(0.1, 0.35, len(order)), 0.0)
    promo = np.round(gross * promo_rate, 2)
    coupon = np.zeros(len(order))
    starts = np.flatnonzero(np.diff(order, prepend=-1) != 0)
    redeem = starts[o.campaign[order[starts]] >= 0]
    offer = world.campaigns.offer[o.campaign[order[redeem]]]
    coupon[redeem] = np.maximum(0.01, np.round(np.minimum(offer, 0.5 * (gross[redeem] - promo[redeem])), 2))
    discount = np.round(promo + coupon, 2)
    return _Lines(order, product, quantity, np.round(gross - discount, 2), discount, coupon)


def _line_categories(rng: np.random.Generator, p: _Persons, person: np.ndarray,
                     t: np.ndarray) -> np.ndarray:
    """Exponential race among adopted categories (equivalent to sampling by preference),
    in blocks to bound memory."""
    out = np.empty(len(person), dtype=np.int64)
    inv_pref = 1.0 / np.maximum(p.pref, 1e-9)
    block = 1_000_000
    for lo in range(0, len(person), block):
        who, when = person[lo:lo + block], t[lo:lo + block]
        race = rng.standard_exponential((len(who), len(CATEGORIES)), dtype=np.float32) * inv_pref[who]
        race[p.adopt[who] > when[:, None]] = np.inf
        out[lo:lo + block] = np.argmin(race, axis=1)
    return out


def _returns(rng: np.random.Generator, world: _World, o: _Orders, lines: _Lines) -> tuple[_Orders, _Lines]:
    """About ``return_rate`` of lines come back 1-28 days later as their own negative order."""
    pick = np.flatnonzero(rng.random(len(lines.order)) < world.params.return_rate)
    src = lines.order[pick]
    t = o.t[src] + rng.integers(1, 29, len(pick)) + rng.random(len(pick)) * 0.3
    ok = t < world.window.days
    pick, src, t = pick[ok], src[ok], t[ok]
    ret = o.take(src)
    ret.t = t
    ret.campaign = np.full(len(src), -1, dtype=np.int64)
    lines_r = _Lines(np.arange(len(src)) + len(o.t), lines.product[pick], -lines.quantity[pick],
                     -lines.amount[pick], np.zeros(len(src)), np.zeros(len(src)))
    return ret, lines_r


# ------------------------------------------------------------------ events
def _events(rng: np.random.Generator, world: _World, p: _Persons, r: _Records, o: _Orders,
            c: _Contacts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(record, time, type) of every behavioural event."""
    parts = [_order_events(rng, o), _browsing(rng, world, p, r), _email_events(rng, world, p, r, c),
             _support_tickets(rng, world, p, r)]
    record = np.concatenate([x[0] for x in parts])
    t = np.concatenate([x[1] for x in parts])
    kind = np.concatenate([x[2] for x in parts])
    ok = (t >= 0) & (t < world.window.days) & (record >= 0)
    return record[ok], t[ok], kind[ok]


def _order_events(rng: np.random.Generator, o: _Orders) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Online orders: views 10-60 min before, an add-to-cart 1-10 min before, a purchase.
    Orders in the window's first hour squeeze their session into the time since the start."""
    online = np.flatnonzero(o.channel != STORE)
    n_views = 1 + rng.poisson(0.3, len(online))
    view_of = np.repeat(online, n_views)
    view_t = o.t[view_of] - rng.uniform(10, 60, len(view_of)) * MINUTE
    view_t = np.where(view_t < 0, o.t[view_of] * rng.uniform(0.0, 0.5, len(view_of)), view_t)
    cart_t = o.t[online] - rng.uniform(1, 10, len(online)) * MINUTE
    cart_t = np.where(cart_t < 0, o.t[online] * rng.uniform(0.5, 1.0, len(online)), cart_t)
    record = np.concatenate([o.record[view_of], o.record[online], o.record[online]])
    t = np.concatenate([view_t, cart_t, o.t[online]])
    kind = np.concatenate([np.full(len(view_of), VIEW), np.full(len(online), CART),
                           np.full(len(online), PURCHASE)])
    return record, t, kind


def _online_record(rng: np.random.Generator, p: _Persons, r: _Records, person: np.ndarray,
                   t: np.ndarray) -> np.ndarray:
    """The web or app account a person used at t (by channel preference), -1 if none yet."""
    web_ok = r.created_of("web", person) <= t
    app_ok = r.created_of("app", person) <= t
    w_web = p.chan_w[person, ONLINE_WEB] * web_ok
    w_app = p.chan_w[person, ONLINE_APP] * app_ok
    use_app = rng.random(len(person)) * (w_web + w_app) >= w_web
    rec = np.where(use_app & app_ok, r.of["app"][person], np.where(web_ok, r.of["web"][person], -1))
    return np.where(web_ok | app_ok, rec, -1)


def _browsing(rng: np.random.Generator, world: _World, p: _Persons,
              r: _Records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sessions that do not end in an order: views, and sometimes an abandoned cart."""
    online = p.has["web"] | p.has["app"]
    span = np.where(online, np.maximum(p.alive_until - p.acq, 0), 0)
    count = rng.poisson(p.rate * 0.12 * span)
    person = _lengths_to_index(count)
    t = p.acq[person] + rng.random(len(person)) * span[person]
    record = _online_record(rng, p, r, person, t)
    n_views = 1 + rng.poisson(0.5, len(person))
    view_of = np.repeat(np.arange(len(person)), n_views)
    view_t = t[view_of] + rng.uniform(0, 20, len(view_of)) * MINUTE
    carted = np.flatnonzero(rng.random(len(person)) < 0.4)
    cart_t = t[carted] + rng.uniform(5, 25, len(carted)) * MINUTE
    return (np.concatenate([record[view_of], record[carted]]), np.concatenate([view_t, cart_t]),
            np.concatenate([np.full(len(view_of), VIEW), np.full(len(carted), CART)]))


def _email_events(rng: np.random.Generator, world: _World, p: _Persons, r: _Records,
                  c: _Contacts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opens (and clicks) of email contacts, tracked on the person's web or app account."""
    email = np.flatnonzero(c.channel == 0)
    opened = email[rng.random(len(email)) < p.open_p[c.person[email]]]
    t_open = c.t[opened] + rng.exponential(0.5, len(opened))
    rec_open = _online_record(rng, p, r, c.person[opened], t_open)
    clicked = np.flatnonzero(rng.random(len(opened)) < 0.3)
    t_click = t_open[clicked] + rng.uniform(0.2, 15, len(clicked)) * MINUTE
    return (np.concatenate([rec_open, rec_open[clicked]]), np.concatenate([t_open, t_click]),
            np.concatenate([np.full(len(opened), OPEN), np.full(len(clicked), CLICK)]))


def _support_tickets(rng: np.random.Generator, world: _World, p: _Persons,
                     r: _Records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rare tickets, several times likelier in the weeks before a person drops out."""
    span = np.maximum(p.alive_until - p.acq, 0)
    person = _lengths_to_index(rng.poisson(span * 0.1 / 365))
    t = p.acq[person] + rng.random(len(person)) * span[person]
    leaving = np.flatnonzero(np.isfinite(p.dropout) & (rng.random(p.n) < 0.3))
    t_leave = p.dropout[leaving] - rng.uniform(1, 45, len(leaving))
    leaving, t_leave = leaving[t_leave > p.acq[leaving]], t_leave[t_leave > p.acq[leaving]]
    person, t = np.concatenate([person, leaving]), np.concatenate([t, t_leave])
    return _online_record(rng, p, r, person, t), t, np.full(len(person), TICKET)
