"""One live decision: scores in, a logged decision out, under the contact policy.

``decide_one`` is what ``/recommend`` (and the simulation, request by request) runs for a
customer whose scores are known: inside the decision log's per-customer transaction it
counts the snapshot's contact history plus the customer's logged decisions and outcomes,
arbitrates, assigns the arm, and logs the decision before returning it. A decision that
cannot be logged is not returned (``DecisionStoreUnavailable``); a contact history that
could not be read fails closed (``PolicyUnavailable``): no offer goes out with its caps off.

``decide_one_grouped`` is the same for the service's coroutines: the decision is committed
with those of concurrent requests, in one transaction (``scoring.decisions.group_commit``).

``decide_many`` does the same for a block of customers without a per-customer lock (the
nightly batch and the simulation, which run alone): one read of the live log, one bulk append.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.catalog import Catalog
from scoring.contacts import DAY_US, ContactHistory, ContactState, live_state, live_state_one
from scoring.decide import Choice, choose, decision_table, ranked
from scoring.decisions.group_commit import GroupCommitter
from scoring.decisions.records import Decision, LiveHistory, from_us
from scoring.decisions.store import DecisionStore
from scoring.nbo import CategorySpend, CustomerScores, arbitrate


class PolicyUnavailable(RuntimeError):
    """The contact policy cannot be applied (its history is unreadable): decide nothing."""


@dataclass
class Versions:
    """What a decision was made with."""

    models: dict[str, str]
    catalog: str
    snapshot: str


@dataclass
class LiveDecision:
    """A decision and what produced it (for the answer's reasons and no-offer reasons)."""

    decision: Decision
    result: dict[str, np.ndarray]
    choice: Choice


def since_us(catalog: Catalog, now_us: int) -> int:
    """The oldest logged event the contact policy can still see."""
    return now_us - (catalog.lookback_days() + 1) * DAY_US


def _history_state(history: ContactHistory | None, history_error: str | None, ids: Sequence[str],
                   catalog: Catalog) -> ContactState:
    if history_error is not None:
        raise PolicyUnavailable(f"contact history unavailable, caps and cooldowns cannot be applied: {history_error}")
    return history.state(ids, catalog) if history is not None else ContactState.none(len(ids), catalog)


def _record(customer_id: str, i: int, catalog: Catalog, result, c: Choice, *, k: int, channel: str | None,
            now_us: int, versions: Versions, source: str) -> Decision:
    offers = ranked(catalog, result, c, i, k=k, channel=channel)
    first = int(c.first[i])
    top = int(c.policy_top[i])
    return Decision(
        customer_id=customer_id, decided_us=now_us, arm=str(c.arm[i]),
        offer_id=catalog.offers[first].id if first >= 0 else None,
        channel=(channel or catalog.offers[first].channels[0]) if first >= 0 else None,
        pscore=float(c.pscore[i]), policy_offer_id=catalog.offers[top].id if top >= 0 else None,
        offers=offers if first >= 0 else [dict(o, shown=False) for o in offers],
        model_versions=versions.models, catalog_version=catalog.version, snapshot_version=versions.snapshot,
        source=source)


def _decider(customer_id: str, scores: CustomerScores, *, catalog: Catalog, spend: CategorySpend,
             history: ContactHistory | None, now_us: int, versions: Versions, k: int, channel: str | None,
             exclude_offer_ids: Sequence[str], history_error: str | None, source: str):
    """The pure ``choose`` the store runs under the customer's lock, and where it leaves
    the arbitration and the choice."""
    hist = _history_state(history, history_error, [customer_id], catalog)
    out: dict[str, object] = {}

    def decide(live: LiveHistory) -> Decision:
        state = hist.plus(live_state_one(catalog, live.contacts, live.outcomes, now_us)) \
            if live.contacts or live.outcomes else hist
        result = arbitrate(scores, catalog, spend, state, channel=channel, exclude_offer_ids=exclude_offer_ids)
        c = choose([customer_id], catalog, result, from_us(now_us))
        out["result"], out["choice"] = result, c
        return _record(customer_id, 0, catalog, result, c, k=k, channel=channel, now_us=now_us, versions=versions,
                       source=source)

    return decide, out


def decide_one(customer_id: str, scores: CustomerScores, *, catalog: Catalog, spend: CategorySpend,
               history: ContactHistory | None, store: DecisionStore, now_us: int, versions: Versions,
               k: int = 3, channel: str | None = None, exclude_offer_ids: Sequence[str] = (),
               history_error: str | None = None, source: str = "api") -> LiveDecision:
    """Decide for one customer (``scores`` of length 1) and log it, atomically."""
    fn, out = _decider(customer_id, scores, catalog=catalog, spend=spend, history=history, now_us=now_us,
                       versions=versions, k=k, channel=channel, exclude_offer_ids=exclude_offer_ids,
                       history_error=history_error, source=source)
    decision = store.decide(customer_id, since_us(catalog, now_us), fn)
    return LiveDecision(decision, out["result"], out["choice"])  # type: ignore[arg-type]


async def decide_one_grouped(customer_id: str, scores: CustomerScores, *, catalog: Catalog, spend: CategorySpend,
                             history: ContactHistory | None, committer: GroupCommitter, now_us: int,
                             versions: Versions, k: int = 3, channel: str | None = None,
                             exclude_offer_ids: Sequence[str] = (), history_error: str | None = None,
                             source: str = "api") -> LiveDecision:
    """``decide_one`` for a coroutine: the decision joins the committer's next group
    (``scoring.decisions.group_commit``) and is on disk when this returns."""
    fn, out = _decider(customer_id, scores, catalog=catalog, spend=spend, history=history, now_us=now_us,
                       versions=versions, k=k, channel=channel, exclude_offer_ids=exclude_offer_ids,
                       history_error=history_error, source=source)
    decision = await committer.decide(customer_id, since_us(catalog, now_us), fn)
    return LiveDecision(decision, out["result"], out["choice"])  # type: ignore[arg-type]


def decide_many(scores: CustomerScores, *, catalog: Catalog, spend: CategorySpend, history: ContactHistory | None,
                live: tuple[pd.DataFrame, pd.DataFrame], now_us: int, versions: Versions, decision_ids: np.ndarray,
                k: int = 3, source: str = "batch") -> tuple[dict, dict[str, np.ndarray], Choice]:
    """Decisions for a block of customers, not logged here (the caller appends the table
    with ``store.log_table``): the snapshot's history plus ``live`` = (contacts, outcomes)
    read once from the log (``store.live``) count toward the caps. Returns the decision
    table (``DECISION_COLUMNS``, one row per customer), the arbitration and the choice."""
    ids = [str(i) for i in scores.customer_ids]
    state = _history_state(history, None, ids, catalog).plus(live_state(ids, catalog, live[0], live[1], now_us))
    result = arbitrate(scores, catalog, spend, state)
    c = choose(ids, catalog, result, from_us(now_us))
    table = decision_table(ids, catalog, result, c, k=k, decided_us=now_us, decision_ids=decision_ids,
                           versions=(versions.models, versions.catalog, versions.snapshot), source=source)
    return table, result, c
