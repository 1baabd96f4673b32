"""Next-best-offer arbitration: scores and contact history in, ranked offers out.

Pure and vectorised over customers x offers, so the service (one customer), the nightly
batch (millions) and the offline evaluation run the same code. For each (customer, offer):

* eligible: segment rules, score ranges, the target category not bought recently
  (and inside the cross-sell population for cross-sell offers), a requested channel,
  the offer's cooldown and cap and the catalog's contact caps, counted from the contact
  history strictly before ``as_of``;
* propensity and value by offer type (``scoring.catalog``), then
  ``expected_value = propensity x value x lever - cost``;
* ranked by expected value; offers not above ``min_expected_value`` are dropped.

The contact state (``scoring.contacts``) counts the snapshot's history and the decision
log's live contacts; its outcome rules pause offers (``Offer.suppression``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from features.definitions import slug
from scoring.catalog import Catalog, Offer
from scoring.contacts import ContactState

#: (customer, offer) rows nbo returns, in order
OFFER_COLUMNS = ("customer_id", "rank", "offer_id", "name", "type", "channel", "propensity", "uplift",
                 "uplift_low", "uplift_high", "value", "expected_value")


@dataclass(frozen=True)
class CategorySpend:
    """Expected spend of a buyer in each category over the catalog's horizon."""

    per_buyer: dict[str, float]

    @classmethod
    def from_snapshot(cls, block: Mapping[str, np.ndarray], categories: Sequence[str], *, window_days: int,
                      horizon_days: int) -> CategorySpend:
        """Mean spend per buying customer in each category, from snapshot features
        (``spend_share_<c>`` x ``monetary`` over ``window_days``), scaled to the horizon."""
        monetary = np.asarray(block["monetary"], dtype="float64")
        out = {}
        for c in categories:
            spend = np.asarray(block[f"spend_share_{slug(c)}"], dtype="float64") * monetary
            buyers = spend[np.isfinite(spend) & (spend > 0)]
            out[c] = float(buyers.mean() * horizon_days / window_days) if len(buyers) else 0.0
        return cls(out)


@dataclass
class CustomerScores:
    """What arbitration reads per customer (arrays of length n; NaN where unknown)."""

    customer_ids: Sequence[str]
    found: np.ndarray  # bool: known to the snapshot (False: cold start, priors used)
    segment: np.ndarray  # object: RFM segment or None
    churn_probability: np.ndarray
    next_purchase_probability: np.ndarray
    expected_orders: np.ndarray
    clv: np.ndarray
    avg_order_value: np.ndarray
    cross_sell: np.ndarray  # n x categories: probability, NaN outside the cross-sell population
    categories: Sequence[str]
    days_since_category: np.ndarray  # n x categories: NaN if never bought
    #: offer id -> (uplift, low, high) arrays of length n, from the cvm-uplift champion
    #: (``training.uplift``); empty without one. Offers with ``propensity: uplift`` read it.
    uplift: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.customer_ids)


def _score_column(s: CustomerScores, name: str) -> np.ndarray:
    return np.asarray(getattr(s, name), dtype="float64")


def arbitrate(scores: CustomerScores, catalog: Catalog, spend: CategorySpend,
              contacts: ContactState | None = None, *, channel: str | None = None,
              exclude_offer_ids: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Matrices (customers x offers): ``eligible``, ``propensity``, ``value``, ``uplift`` with
    ``uplift_low`` and ``uplift_high`` (its 95 % interval; NaN without an uplift model), ``expected_value`` (NaN where not eligible) and ``why`` (the
    first rule that made a pair ineligible, or ''). Expected value = propensity x value x
    lever - cost; for an offer with ``propensity: uplift``, uplift x value x lever - cost,
    and a customer whose uplift interval lies below zero does not get it."""
    n, offers = len(scores), catalog.offers
    m = len(offers)
    contacts = contacts or ContactState.none(n, catalog)
    cat_index = {c: k for k, c in enumerate(scores.categories)}
    prop = np.full((n, m), np.nan)
    value = np.full((n, m), np.nan)
    why = np.full((n, m), "", dtype=object)

    def block(j: int, mask: np.ndarray, reason: str) -> None:
        hit = mask & (why[:, j] == "")
        why[hit, j] = reason

    churn = _score_column(scores, "churn_probability")
    nextp = _score_column(scores, "next_purchase_probability")
    orders = _score_column(scores, "expected_orders")
    clv = _score_column(scores, "clv")
    aov = _score_column(scores, "avg_order_value")
    segment = np.asarray(scores.segment, dtype=object)
    found = np.asarray(scores.found, dtype=bool)
    cap_blocked = np.zeros(n, dtype=bool)
    for k, cap in enumerate(catalog.contact_policy.caps):
        cap_blocked |= contacts.total[:, k] >= cap.max_contacts
    excluded = set(exclude_offer_ids)

    uplift = np.full((n, m), np.nan)
    uplift_low = np.full((n, m), np.nan)
    uplift_high = np.full((n, m), np.nan)
    basis = np.full((n, m), np.nan)  # what expected value multiplies: propensity, or uplift
    for j, o in enumerate(offers):
        k = cat_index.get(o.target_category) if o.target_category else None
        # propensity and value by type
        if o.type == "cross_sell":
            prop[:, j] = scores.cross_sell[:, k] if k is not None else np.nan
        elif o.type == "retention":
            prop[:, j] = churn
        else:
            prop[:, j] = nextp
        vm = o.value
        if vm.model == "category_spend":
            value[:, j] = vm.margin * spend.per_buyer.get(o.target_category, 0.0)
        elif vm.model == "clv_share":
            value[:, j] = vm.rate * clv
        elif vm.model == "basket_uplift":
            value[:, j] = vm.rate * vm.margin * orders * aov
        else:
            value[:, j] = vm.amount
        # eligibility, first failing rule wins the explanation
        if o.id in excluded:
            block(j, np.ones(n, dtype=bool), "excluded by the request")
        if channel is not None and channel not in o.channels:
            block(j, np.ones(n, dtype=bool), f"not offered through channel {channel!r}")
        el = o.eligibility
        if el.known_customers_only:
            block(j, ~found, "known customers only")
        if el.segments is not None:
            block(j, ~np.isin(segment, el.segments), "segment not targeted")
        if el.exclude_segments:
            block(j, np.isin(segment, el.exclude_segments), "segment excluded")
        for name, rng in el.score_ranges.items():
            v = prop[:, j] if name == "propensity" else _score_column(scores, name)
            if rng.min is not None:
                block(j, ~(v >= rng.min), f"{name} below {rng.min}")
            if rng.max is not None:
                block(j, ~(v <= rng.max), f"{name} above {rng.max}")
        if k is not None and el.exclude_if_bought_within_days:
            days = scores.days_since_category[:, k]
            block(j, days <= el.exclude_if_bought_within_days,
                  f"bought {o.target_category} in the last {el.exclude_if_bought_within_days} days")
        if o.type == "cross_sell":
            block(j, np.isnan(prop[:, j]), f"already buys {o.target_category}")
        if o.cooldown_days:
            block(j, contacts.offer_last[:, j] <= o.cooldown_days, f"cooldown of {o.cooldown_days} days")
        if o.cap is not None:
            block(j, contacts.offer_count[:, j] >= o.cap.max_contacts,
                  f"offer cap {o.cap.max_contacts} in {o.cap.window_days} days reached")
        block(j, cap_blocked, "contact cap reached")
        if o.suppression and contacts.suppressed is not None:
            rules = "; ".join(f"{r.count} {r.outcome} in {r.within_days} days pause {r.pause_days} days"
                              for r in o.suppression)
            block(j, contacts.suppressed[:, j], f"paused by an outcome rule ({rules})")
        scored = scores.uplift.get(o.id)
        if scored is not None:
            uplift[:, j], uplift_low[:, j], uplift_high[:, j] = scored
        if o.propensity == "uplift":
            # incremental value: only what the contact changes is worth paying for
            basis[:, j] = uplift[:, j]
            if scored is None:
                block(j, np.ones(n, dtype=bool), "no uplift model for this offer (cvm train uplift)")
            else:
                block(j, uplift_high[:, j] < 0,
                      "uplift interval below zero: contact would lower conversion")
        else:
            basis[:, j] = prop[:, j]
        block(j, ~np.isfinite(basis[:, j]) | ~np.isfinite(value[:, j]), "score unavailable")

    lever = np.array([o.lever for o in offers])
    cost = np.array([o.cost for o in offers])
    ev = basis * value * lever - cost
    eligible = why == ""
    block_all = ~(ev > catalog.contact_policy.min_expected_value) & eligible
    why[block_all] = "expected value not above the minimum"
    eligible &= ~block_all
    return {"eligible": eligible, "propensity": prop, "value": value, "uplift": uplift,
            "uplift_low": uplift_low, "uplift_high": uplift_high,
            "expected_value": np.where(eligible, ev, np.nan), "why": why}


def ranking(result: Mapping[str, np.ndarray]) -> np.ndarray:
    """(customers x offers) offer indices by expected value, best first, ineligible last."""
    ev = result["expected_value"]
    return np.argsort(np.where(np.isnan(ev), np.inf, -ev), axis=1, kind="stable")


def top_offers(scores: CustomerScores, catalog: Catalog, result: Mapping[str, np.ndarray], *, k: int,
               channel: str | None = None, order: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The ``k`` best eligible offers per customer, best first: columns ``OFFER_COLUMNS``
    as arrays, one entry per (customer, offer) (``pd.DataFrame(...)`` makes it a table).
    ``order`` (customers x offers) replaces the ranking by expected value (``ranking``)."""
    ev = result["expected_value"]
    n, _m = ev.shape
    order = (ranking(result) if order is None else order)[:, :k]
    width = order.shape[1]
    rows_i = np.repeat(np.arange(n), width)
    cols_j = order.reshape(-1)
    keep = result["eligible"][rows_i, cols_j]
    rank = (np.arange(len(keep)) % max(width, 1))[keep] + 1  # eligible offers sort first in each row
    rows_i, cols_j = rows_i[keep], cols_j[keep]
    offers = catalog.offers
    ids = np.asarray(scores.customer_ids, dtype=object)

    def per_offer(values: list) -> np.ndarray:
        return np.asarray(values, dtype=object)[cols_j] if len(cols_j) else np.empty(0, dtype=object)

    return {
        "customer_id": ids[rows_i],
        "rank": rank.astype("int64"),
        "offer_id": per_offer([o.id for o in offers]),
        "name": per_offer([o.name for o in offers]),
        "type": per_offer([o.type for o in offers]),
        "channel": (np.full(len(cols_j), channel, dtype=object) if channel
                    else per_offer([o.channels[0] for o in offers])),
        "propensity": result["propensity"][rows_i, cols_j],
        "uplift": result["uplift"][rows_i, cols_j],
        "uplift_low": result["uplift_low"][rows_i, cols_j],
        "uplift_high": result["uplift_high"][rows_i, cols_j],
        "value": result["value"][rows_i, cols_j],
        "expected_value": ev[rows_i, cols_j],
    }


def offer_reasons(offer: Offer, scores: CustomerScores, i: int, propensity: float, value: float,
                  spend: CategorySpend, uplift: tuple[float, float, float] | None = None) -> list[str]:
    """Plain-language reasons for one recommended offer (``uplift``: its estimate and interval)."""
    out = []
    if offer.type == "cross_sell":
        out.append(f"cross-sell propensity for {offer.target_category}: {propensity:.3f} "
                   f"(has not bought it recently)")
        out.append(f"value: margin {offer.value.margin:.0%} of ${spend.per_buyer.get(offer.target_category, 0):.2f} "
                   f"a buyer spends on {offer.target_category} in the horizon")
    elif offer.type == "retention":
        out.append(f"churn probability {propensity:.3f}")
        out.append(f"value: {offer.value.rate:.0%} of predicted CLV {float(scores.clv[i]):.2f}")
    elif offer.type == "upsell":
        out.append(f"next-purchase probability {propensity:.3f}")
        out.append(f"value: {offer.value.rate:.0%} uplift x {offer.value.margin:.0%} margin on "
                   f"{float(scores.expected_orders[i]):.2f} expected orders of {float(scores.avg_order_value[i]):.2f}")
    else:
        out.append(f"next-purchase probability {propensity:.3f}")
        out.append(f"value: {offer.value.rate:.0%} of predicted CLV {float(scores.clv[i]):.2f}")
    if offer.value.model == "fixed":
        out[-1] = f"value: fixed {value:.2f}"
    if uplift is not None and np.isfinite(uplift[0]):
        lead = "ranked on uplift" if offer.propensity == "uplift" else "uplift (not used in its ranking)"
        out.append(f"{lead}: the contact changes conversion by {uplift[0]:+.3f} "
                   f"(95 % interval {uplift[1]:+.3f} to {uplift[2]:+.3f})")
    seg = scores.segment[i]
    if seg:
        out.append(f"RFM segment {seg}")
    if offer.cost:
        out.append(f"cost per contact {offer.cost:.2f}")
    return out
