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
        return self._span_cache

    def state(self, customer_ids: Sequence[str], catalog: Catalog) -> ContactState:
        n, m = len(customer_ids), len(catalog.offers)
        caps = catalog.contact_policy.caps
        never = np.iinfo("int64").max
        total = np.zeros((n, len(caps)), dtype="int64")
        offer_count = np.zeros((n, m), dtype="int64")
        offer_last = np.full((n, m), never, dtype="int64")  # days since the offer's last contact
        if not n or not len(self._ages):
            return ContactState(total, offer_count, offer_last)
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
    offer's contacts within its cap window and days since its last contact (n x offers)."""

    total: np.ndarray
    offer_count: np.ndarray
    offer_last: np.ndarray

    @classmethod
    def none(cls, n: int, catalog: Catalog) -> ContactState:
        m = len(catalog.offers)
        return cls(np.zeros((n, len(catalog.contact_policy.caps)), dtype="int64"),
                   np.zeros((n, m), dtype="int64"), np.full((n, m), np.iinfo("int64").max, dtype="int64"))


