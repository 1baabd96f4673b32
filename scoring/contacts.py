"""Contact history and the contact state the offer engine's caps and cooldowns read.

The history is the dataset's campaign contacts strictly before the snapshot's ``as_of``,
keyed by golden customer id. It is published with the snapshot (``features.publish``), so
the service, a Bento and the batch all apply the same contact policy without reading a
raw source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from base.dates import cutoff
from scoring.catalog import Catalog


@dataclass
class ContactHistory:
    """Past contacts (before ``as_of``), one entry per contact, as column arrays.

    ``ages`` are whole days from the contact's date to ``as_of`` (>= 1 for a contact the
    day before); ``campaign_ids`` link a contact to an offer through ``Offer.campaign_ids``.
    Lookups are vectorised (no Python loop per customer), so the nightly batch asks for
    millions of customers at once.
    """

    as_of: date
    _customers: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    _ages: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))
    _campaigns: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    _span_cache: tuple | None = field(default=None, repr=False, compare=False)
    _span_dict: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_frame(cls, contacts: pd.DataFrame, as_of: date) -> ContactHistory:
        """``customer_id``, ``campaign_id``, ``timestamp`` rows; those at or after as_of are ignored."""
        cut = pd.Timestamp(cutoff(as_of))
        ts = pd.to_datetime(contacts["timestamp"])
        c = contacts.loc[ts < cut, ["customer_id", "campaign_id"]].assign(_ts=ts[ts < cut])
        c["customer_id"] = c["customer_id"].astype(str)
        c = c.sort_values(["customer_id", "_ts"], kind="stable")
        ages = (cut.normalize() - c["_ts"].dt.normalize()).dt.days.to_numpy(dtype="int64")
        history = cls(as_of, c["customer_id"].astype(str).to_numpy(dtype=object), ages,
                      c["campaign_id"].astype(str).to_numpy(dtype=object))
        history._spans()  # built here, not by the first concurrent request
        return history

    def __len__(self) -> int:
        return len(self._ages)

    def _spans(self) -> tuple[pd.Index, np.ndarray, np.ndarray]:
        """Distinct customers (hash index) and the [start, end) of their contacts; built once."""
        if self._span_cache is None:
            ids = self._customers
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.empty(0, dtype="int64")
            ends = np.r_[starts[1:], len(ids)].astype("int64")
            self._span_cache = (pd.Index(ids[starts]), starts.astype("int64"), ends)
            self._span_dict = dict(zip(ids[starts].tolist(), zip(starts.tolist(), ends.tolist(), strict=True),
                                       strict=True))
        return self._span_cache

    def _state_one(self, customer_id: str, catalog: Catalog) -> ContactState:
        """``state`` of one customer with plain loops over their few contacts: what
        ``/recommend`` asks per request (a pandas index lookup and merge cost ~0.4 ms there;
        this ~20 us). ``tests/test_contacts.py`` checks it equals the vectorised path."""
        self._spans()
        caps = catalog.contact_policy.caps
        m = len(catalog.offers)
        never = np.iinfo("int64").max
        total = [0] * len(caps)
        offer_count, offer_last = [0] * m, [never] * m
        span = self._span_dict.get(customer_id)
        if span is not None:
            links: dict[str, list[int]] = {}
            for j, o in enumerate(catalog.offers):
                for cid in o.campaign_ids:
                    links.setdefault(cid, []).append(j)
            windows = [o.cap.window_days if o.cap else 0 for o in catalog.offers]
            ages, campaigns = self._ages[span[0]:span[1]].tolist(), self._campaigns[span[0]:span[1]].tolist()
            for age, campaign in zip(ages, campaigns, strict=True):
                for k, cap in enumerate(caps):
                    total[k] += age <= cap.window_days
                for j in links.get(campaign, ()):
                    offer_last[j] = min(offer_last[j], age)
                    if 0 < windows[j] and age <= windows[j]:
                        offer_count[j] += 1
        return ContactState(np.array([total], dtype="int64").reshape(1, len(caps)),
                            np.array([offer_count], dtype="int64").reshape(1, m),
                            np.array([offer_last], dtype="int64").reshape(1, m))

    def state(self, customer_ids: Sequence[str], catalog: Catalog) -> ContactState:
        n, m = len(customer_ids), len(catalog.offers)
        caps = catalog.contact_policy.caps
        never = np.iinfo("int64").max
        total = np.zeros((n, len(caps)), dtype="int64")
        offer_count = np.zeros((n, m), dtype="int64")
        offer_last = np.full((n, m), never, dtype="int64")  # days since the offer's last contact
        if not n or not len(self._ages):
            return ContactState(total, offer_count, offer_last)
        if n == 1:
            return self._state_one(str(customer_ids[0]), catalog)
        # contacts of the requested customers (contacts are sorted by customer): one hash
        # lookup per requested id, then the contiguous span of each customer's contacts
        request = np.asarray(customer_ids, dtype=object)
        keys, starts, ends = self._spans()
        pos = keys.get_indexer(request)
        found = np.flatnonzero(pos >= 0)
        lo, hi = starts[pos[found]], ends[pos[found]]
        lengths = hi - lo
        row = np.repeat(found, lengths)
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        take = np.repeat(lo, lengths) + offsets
        ages, campaigns = self._ages[take], self._campaigns[take]
        for k, cap in enumerate(caps):
            total[:, k] = np.bincount(row[ages <= cap.window_days], minlength=n)
        pairs = [(cid, j) for j, o in enumerate(catalog.offers) for cid in o.campaign_ids]
        if pairs and len(row):
            linked = pd.DataFrame({"campaign": [p[0] for p in pairs], "offer": [p[1] for p in pairs]})
            hits = pd.DataFrame({"campaign": campaigns, "row": row, "age": ages}).merge(linked, on="campaign")
            r, j, a = (hits[c].to_numpy(dtype="int64") for c in ("row", "offer", "age"))
            np.minimum.at(offer_last, (r, j), a)
            windows = np.array([o.cap.window_days if o.cap else 0 for o in catalog.offers], dtype="int64")
            inside = (windows[j] > 0) & (a <= windows[j])
            np.add.at(offer_count, (r[inside], j[inside]), 1)
        return ContactState(total, offer_count, offer_last)


@dataclass
class ContactState:
    """Counts per customer: contacts within each catalog cap window (n x caps), this
    offer's contacts within its cap window and days since its last contact (n x offers),
    and the offers paused by an outcome rule (n x offers)."""

    total: np.ndarray
    offer_count: np.ndarray
    offer_last: np.ndarray
    suppressed: np.ndarray | None = None

    @classmethod
    def none(cls, n: int, catalog: Catalog) -> ContactState:
        m = len(catalog.offers)
        return cls(np.zeros((n, len(catalog.contact_policy.caps)), dtype="int64"),
                   np.zeros((n, m), dtype="int64"), np.full((n, m), np.iinfo("int64").max, dtype="int64"),
                   np.zeros((n, m), dtype=bool))

    def plus(self, other: ContactState) -> ContactState:
        """Both sets of contacts counted together (the snapshot's history and the live log)."""
        sup = [s for s in (self.suppressed, other.suppressed) if s is not None]
        return ContactState(self.total + other.total, self.offer_count + other.offer_count,
                            np.minimum(self.offer_last, other.offer_last),
                            np.logical_or.reduce(sup) if sup else None)


#: one day in microseconds (the decision log's time unit)
DAY_US = 86_400_000_000


def live_state(customer_ids: Sequence[str], catalog: Catalog, contacts: pd.DataFrame, outcomes: pd.DataFrame,
               now_us: int) -> ContactState:
    """The contact state from the decision log: ``contacts`` (customer_id, offer_id,
    decided_us) are the logged decisions that presented an offer and were not released,
    ``outcomes`` (customer_id, offer_id, type, occurred_us) the outcomes reported on them.

    A logged contact is ``floor((now - decided) / 1 day) + 1`` days old, the unit of the
    snapshot's history (a contact earlier today is 1 day old, like one the day before the
    snapshot), so ``age <= window`` means "less than ``window`` days ago" and a cooldown
    of N days blocks the offer until N days after the contact.
    """
    n = len(customer_ids)
    state = ContactState.none(n, catalog)
    index = pd.Index(np.asarray(customer_ids, dtype=object))
    offer_index = pd.Index([o.id for o in catalog.offers])
    if len(contacts):
        row = index.get_indexer(contacts["customer_id"].astype(str).to_numpy(dtype=object))
        # a decision logged "after" now (another worker's clock or request read the time later
        # but committed first) is a contact made just now: it counts, as 1 day old
        age = np.maximum((now_us - contacts["decided_us"].to_numpy(dtype="int64")) // DAY_US + 1, 1)
        keep = row >= 0
        row, age = row[keep], age[keep]
        j = offer_index.get_indexer(contacts["offer_id"].astype(str).to_numpy(dtype=object))[keep]
        for k, cap in enumerate(catalog.contact_policy.caps):
            state.total[:, k] = np.bincount(row[age <= cap.window_days], minlength=n)
        known = j >= 0
        r, jj, a = row[known], j[known], age[known]
        np.minimum.at(state.offer_last, (r, jj), a)
        windows = np.array([o.cap.window_days if o.cap else 0 for o in catalog.offers], dtype="int64")
        inside = (windows[jj] > 0) & (a <= windows[jj])
        np.add.at(state.offer_count, (r[inside], jj[inside]), 1)
    if len(outcomes):
        state.suppressed = suppressed(customer_ids, catalog, outcomes, now_us)
    return state


def live_state_one(catalog: Catalog, contacts: Sequence[tuple[str, int]], outcomes: Sequence[tuple[str, str, int]],
                   now_us: int) -> ContactState:
    """``live_state`` for one customer from the log's rows as tuples (offer_id, decided_us) and
    (offer_id, type, occurred_us): the same counts with plain loops over the few rows one
    customer has, for the service's per-request path (no frame is built)."""
    state = ContactState.none(1, catalog)
    position = {o.id: j for j, o in enumerate(catalog.offers)}
    for offer_id, decided_us in contacts:
        age = max((now_us - int(decided_us)) // DAY_US + 1, 1)
        for k, cap in enumerate(catalog.contact_policy.caps):
            if age <= cap.window_days:
                state.total[0, k] += 1
        j = position.get(offer_id)
        if j is None:
            continue
        state.offer_last[0, j] = min(state.offer_last[0, j], age)
        cap = catalog.offers[j].cap
        if cap is not None and age <= cap.window_days:
            state.offer_count[0, j] += 1
    for j, offer in enumerate(catalog.offers):
        for rule in offer.suppression:
            times = sorted(int(t) for o, kind, t in outcomes if o == offer.id and kind == rule.outcome and t <= now_us)
            for i in range(rule.count - 1, len(times)):
                if (times[i] - times[i - rule.count + 1] <= rule.within_days * DAY_US
                        and now_us - times[i] < rule.pause_days * DAY_US):
                    state.suppressed[0, j] = True
                    break
    return state


def suppressed(customer_ids: Sequence[str], catalog: Catalog, outcomes: pd.DataFrame, now_us: int) -> np.ndarray:
    """(n x offers) True where an outcome rule pauses the offer at ``now_us``: ``count``
    outcomes of the rule's type for that offer within ``within_days``, the last of them
    less than ``pause_days`` ago."""
    n, m = len(customer_ids), len(catalog.offers)
    out = np.zeros((n, m), dtype=bool)
    index = pd.Index(np.asarray(customer_ids, dtype=object))
    for j, offer in enumerate(catalog.offers):
        for rule in offer.suppression:
            hits = outcomes[(outcomes["offer_id"] == offer.id) & (outcomes["type"] == rule.outcome)]
            hits = hits[hits["occurred_us"] <= now_us]
            if len(hits) < rule.count:
                continue
            hits = hits.sort_values(["customer_id", "occurred_us"], kind="stable")
            t = hits["occurred_us"].to_numpy(dtype="int64")
            first = hits.groupby("customer_id", sort=False)["occurred_us"].shift(rule.count - 1)
            starts = first.to_numpy(dtype="float64")
            burst = np.isfinite(starts) & (t - np.nan_to_num(starts) <= rule.within_days * DAY_US)
            recent = now_us - t < rule.pause_days * DAY_US
            paused = hits.loc[burst & recent, "customer_id"].astype(str).unique()
            rows = index.get_indexer(paused)
            out[rows[rows >= 0], j] = True
    return out


