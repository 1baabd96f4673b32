"""The world all chunks share: the calendar window and its seasonality, the product catalog,
the stores, the campaign schedule and the id key (``_World``, built by ``_world``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pyarrow as pa

from sources.synth.arrays import _categorical, _ids, _lengths_to_index, _pick, _rng
from sources.synth.params import (
    _CATEGORY_ECONOMICS,
    _MONTH_FACTOR,
    _REGION_SHARE,
    _SUBCATEGORIES,
    _WEEKDAY_FACTOR,
    CATEGORIES,
    N_STORES,
    US_PER_DAY,
    SynthParams,
)

#: entropy word of the streams shared by all chunks (catalog, stores, campaigns)
_GLOBAL = 2**32


@dataclass(frozen=True)
class _Window:
    """The calendar: day 0 is ``start`` at 00:00; all times are float days from there."""

    start: date
    days: int
    day_factor: np.ndarray  # seasonal intensity per day, mean 1
    weekend: np.ndarray  # bool per day
    month_start: np.ndarray  # first day of each calendar month in the window (+ end)

    @property
    def start_us(self) -> int:
        return int((datetime(self.start.year, self.start.month, self.start.day) - datetime(1970, 1, 1))
                   .total_seconds()) * 1_000_000

    def us(self, days: np.ndarray) -> np.ndarray:
        """Float days to int64 microseconds since the epoch, inside the window."""
        us = np.floor(np.asarray(days, dtype=np.float64) * US_PER_DAY).astype(np.int64)
        return np.clip(us, 0, self.days * US_PER_DAY - 1) + self.start_us

    def timestamps(self, days: np.ndarray) -> pa.Array:
        return pa.array(self.us(days), type=pa.timestamp("us"))


def _window(start: date, end: date) -> _Window:
    days = (end - start).days + 1
    dates = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    months = dates.astype("datetime64[M]").astype(np.int64) % 12
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    factor = np.asarray(_MONTH_FACTOR)[months] * np.asarray(_WEEKDAY_FACTOR)[weekday]
    christmas = (months == 11) & ((dates - dates.astype("datetime64[M]")).astype(np.int64) == 24)
    factor[christmas] *= 0.15  # stores shut on 25 December
    first_of_month = np.flatnonzero(dates == dates.astype("datetime64[M]"))
    month_start = np.unique(np.concatenate([[0], first_of_month, [days]]))
    return _Window(start, days, factor / factor.mean(), weekday >= 5, month_start.astype(np.float64))


@dataclass(frozen=True)
class _Catalog:
    product_id: pa.Array
    category: np.ndarray  # category code per product
    subcategory: pa.Array
    price: np.ndarray
    #: category + cumulative popularity within it: one searchsorted samples a product
    popularity_key: np.ndarray


def _catalog(rng: np.random.Generator) -> _Catalog:
    sizes = rng.integers(50, 401, size=len(CATEGORIES))
    category = _lengths_to_index(sizes)
    rank = np.concatenate([np.arange(1, s + 1) for s in sizes])  # 12 categories: not a per-row loop
    weight = rank ** -1.07  # Zipf-like popularity
    key = np.empty(len(category))
    price = np.empty(len(category))
    sub_names: list[str] = []
    sub_code = np.empty(len(category), dtype=np.int64)
    start = 0
    for c, name in enumerate(CATEGORIES):
        stop = start + sizes[c]
        cum = np.cumsum(weight[start:stop])
        key[start:stop] = c + cum / cum[-1]
        key[stop - 1] = c + 1.0
        median, sigma, _, _ = _CATEGORY_ECONOMICS[name]
        price[start:stop] = np.round(np.maximum(0.2, rng.lognormal(np.log(median), sigma, sizes[c])), 2)
        subs = _SUBCATEGORIES[name]
        sub_code[start:stop] = len(sub_names) + rng.integers(0, len(subs), sizes[c])
        sub_names.extend(subs)
        start = stop
    # ids in random order, so that a product's number says nothing about its popularity
    ids = _ids("P", rng.permutation(len(category)) + 1, 6, base=10)
    return _Catalog(ids, category, _pick(sub_code, tuple(sub_names)), price, key)


@dataclass(frozen=True)
class _Stores:
    region: np.ndarray  # region code per store
    first: np.ndarray  # first store index of each region
    count: np.ndarray  # stores per region
    ids: pa.Array


def _stores() -> _Stores:
    share = np.asarray(_REGION_SHARE) / np.sum(_REGION_SHARE)
    count = np.maximum(2, np.round(share * N_STORES)).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    region = _lengths_to_index(count)
    return _Stores(region, first, count, _ids("S", np.arange(len(region)) + 1, 4, base=10))


@dataclass(frozen=True)
class _Campaigns:
    ids: pa.Array
    day: np.ndarray  # send day (float days)
    channel: np.ndarray  # contact channel code
    reach: np.ndarray  # share of CRM records targeted
    offer: np.ndarray  # coupon value (GBP)


def _campaigns(rng: np.random.Generator, window: _Window) -> _Campaigns:
    gaps = rng.integers(14, 29, size=window.days // 14 + 2)
    day = 7 + np.cumsum(gaps) - gaps[0]
    day = day[day < window.days - 1].astype(np.float64)
    n = len(day)
    return _Campaigns(
        ids=_ids("CMP", np.arange(n) + 1, 4, base=10),
        day=day,
        channel=_categorical(rng, (0.6, 0.25, 0.15), n),
        reach=rng.uniform(0.2, 0.4, n),
        offer=rng.choice(np.array([2.0, 3.0, 5.0, 10.0]), n),
    )


@dataclass(frozen=True)
class _World:
    """Everything shared by all chunks: calendar, catalog, stores, campaigns, id keys."""

    window: _Window
    catalog: _Catalog
    stores: _Stores
    campaigns: _Campaigns
    params: SynthParams
    key: int  # keys the id bijections, so ids differ between seeds


def _world(seed: int, start: date, end: date, params: SynthParams) -> _World:
    window = _window(start, end)
    return _World(
        window=window,
        catalog=_catalog(_rng(seed, _GLOBAL, 1)),
        stores=_stores(),
        campaigns=_campaigns(_rng(seed, _GLOBAL, 2), window),
        params=params,
        key=int(_rng(seed, _GLOBAL, 3).integers(0, 2**62)),
    )
