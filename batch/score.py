"""Scoring a whole feature snapshot: tables in, tables out, no I/O.

The nightly job (``batch.job``) reads a snapshot, calls ``score_snapshot`` and writes
what it returns. Inference runs straight on the LightGBM boosters over float32 matrices
in chunks (the scoring core, ``scoring.inference``), cross-sell for every category in one
matrix, and the next-best-offer engine is the one the service runs (``scoring.nbo``),
vectorised over customers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from features.definitions import slug
from scoring.catalog import Catalog
from scoring.champions import Champion, categories_of, missing_tasks
from scoring.contacts import ContactHistory, ContactState, live_state
from scoring.decide import batch_decision_ids, choose, decision_table
from scoring.decisions import from_us
from scoring.inference import score_block, to_customer_scores
from scoring.nbo import CategorySpend, arbitrate, top_offers
from scoring.uplift_scores import UpliftChampion, uplift_for
from training.predictor import block_from_frame

#: scores.parquet columns, in order
SCORE_COLUMNS = ("customer_id", "as_of", "rfm_segment", "churn_probability", "next_purchase_probability",
                 "expected_orders", "clv", "best_offer_id", "best_offer_expected_value")
#: rows scored per chunk: bounds the memory of the float32 matrices and the offer arrays
CHUNK_ROWS = 200_000


@dataclass
class BatchOutputs:
    scores: pd.DataFrame
    cross_sell: pd.DataFrame  # customer_id, category, probability (eligible pairs only)
    offers: pd.DataFrame  # top k offers per customer shown one (with decision_id, arm, pscore)
    missing_tasks: list[str] = field(default_factory=list)
    decisions: pd.DataFrame | None = None  # one decision log row per customer (None: no catalog)


@dataclass(frozen=True)
class BatchDecision:
    """What the batch's decisions need besides the scores: their time, the run they belong to
    (decision ids derive from it), the live log read once (``store.live``), the versions."""

    decided_us: int
    run_key: str
    live: tuple[pd.DataFrame, pd.DataFrame]
    versions: tuple[dict, str, str]  # model versions, catalog version, snapshot version


def score_snapshot(frame: pd.DataFrame, champions: Mapping[str, Champion], catalog: Catalog | None,
                   as_of: date, *, window_days: int, contacts: ContactHistory | None = None, k: int = 3,
                   chunk_rows: int = CHUNK_ROWS, progress: Callable[[int], None] | None = None,
                   decision: BatchDecision | None = None, uplift: UpliftChampion | None = None) -> BatchOutputs:
    """Every customer of ``frame`` (one snapshot row each) scored by the champions.

    ``window_days`` is the window the snapshot's ``monetary`` covers (its feature
    configuration's ``rfm_window_days``): category spend, and so offer values, are scaled
    by it. A task without a champion leaves its columns null and is listed in
    ``missing_tasks``; without a cross-sell champion or a catalog, offers are empty. With
    an ``uplift`` champion, offers carry each one's uplift and interval (NaN without).
    """
    if frame["customer_id"].duplicated().any():
        raise ValueError("the snapshot has duplicate customer_id values: one row per customer is required")
    missing = missing_tasks(dict(champions))
    categories = categories_of(dict(champions))
    if catalog is not None:
        catalog.check_categories(categories, "offer catalog")
    spend = (CategorySpend.from_snapshot(block_from_frame(frame, ["monetary", *(f"spend_share_{slug(c)}"
                                                                                for c in categories)]),
                                         categories, window_days=window_days, horizon_days=catalog.horizon_days)
             if catalog is not None and categories else CategorySpend({}))
    score_parts, xs_parts, offer_parts, decision_parts = [], [], [], []
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start:start + chunk_rows]
        s, x, o, d = score_chunk(chunk, champions, categories, catalog, spend, contacts, k, decision, uplift)
        score_parts.append(s)
        xs_parts.append(x)
        offer_parts.append(o)
        if d is not None:
            decision_parts.append(d)
        if progress is not None:
            progress(len(chunk))
    scores = pd.concat(score_parts, ignore_index=True) if score_parts else _empty_scores()
    scores.insert(1, "as_of", pd.Series([as_of] * len(scores), dtype="object"))
    scores = scores[list(SCORE_COLUMNS)]
    cross_sell = (pd.concat(xs_parts, ignore_index=True) if xs_parts
                  else pd.DataFrame({"customer_id": [], "category": [], "probability": []}))
    offers = pd.concat(offer_parts, ignore_index=True) if offer_parts else pd.DataFrame()
    if len(offers):
        offers.insert(1, "as_of", pd.Series([as_of] * len(offers), dtype="object"))
    decisions = pd.concat(decision_parts, ignore_index=True) if decision_parts else None
    return BatchOutputs(scores, cross_sell, offers, missing, decisions)


def _empty_scores() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in SCORE_COLUMNS if c != "as_of"})


def score_chunk(chunk: pd.DataFrame, champions: Mapping[str, Champion], categories: list[str],
                catalog: Catalog | None, spend: CategorySpend, contacts: ContactHistory | None, k: int,
                decision: BatchDecision | None = None, uplift: UpliftChampion | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Snapshot rows in; their scores, eligible cross-sell pairs, top ``k`` offers and
    decisions out (the embedded job calls it per chunk, the Spark job per Arrow batch).

    With ``decision``, each customer is a decision: the live log's contacts count toward
    the caps, the customer's arm decides what is shown (nothing for control, a random
    eligible offer first for exploration), and the offer rows carry ``decision_id``,
    ``arm`` and ``pscore``."""
    n = len(chunk)
    block = block_from_frame(chunk)
    ids = chunk["customer_id"].astype(str).to_numpy(dtype=object)
    lifts = uplift_for(uplift, block, n, [o.id for o in catalog.offers]) if catalog is not None else {}
    cs = to_customer_scores(ids, np.ones(n, dtype=bool), block, score_block(champions, block, n), categories,
                            uplift=lifts)
    scores = pd.DataFrame({
        "customer_id": ids,
        "rfm_segment": cs.segment,
        "churn_probability": cs.churn_probability,
        "next_purchase_probability": cs.next_purchase_probability,
        "expected_orders": cs.expected_orders,
        "clv": cs.clv,
    })
    rows, cols = np.nonzero(np.isfinite(cs.cross_sell))
    cross_sell = pd.DataFrame({"customer_id": ids[rows],
                               "category": np.asarray(categories, dtype=object)[cols] if len(categories)
                               else np.empty(0, dtype=object),
                               "probability": cs.cross_sell[rows, cols]})
    best_id = np.full(n, None, dtype=object)
    best_ev = np.full(n, np.nan)
    offers = pd.DataFrame()
    decisions = None
    if catalog is not None:
        state = contacts.state(list(ids), catalog) if contacts is not None else ContactState.none(n, catalog)
        if decision is None:
            result = arbitrate(cs, catalog, spend, state)
            offers = pd.DataFrame(top_offers(cs, catalog, result, k=k))
        else:
            state = state.plus(live_state(list(ids), catalog, *decision.live, decision.decided_us))
            result = arbitrate(cs, catalog, spend, state)
            c = choose(list(ids), catalog, result, from_us(decision.decided_us))
            decision_ids = batch_decision_ids(ids, decision.run_key)
            decisions = pd.DataFrame(decision_table(ids, catalog, result, c, k=k, decided_us=decision.decided_us,
                                                    decision_ids=decision_ids, versions=decision.versions))
            offers = pd.DataFrame(top_offers(cs, catalog, result, k=k, order=c.order))
            row = pd.Index(ids).get_indexer(offers["customer_id"])
            shown = c.shows[row]
            offers = offers[shown].reset_index(drop=True)
            row = row[shown]
            offers["decision_id"] = decision_ids[row]
            offers["arm"] = c.arm[row]
            offers["pscore"] = c.pscore[row]
        first = offers[offers["rank"] == 1]
        pos = pd.Index(ids).get_indexer(first["customer_id"])
        best_id[pos] = first["offer_id"].to_numpy(dtype=object)
        best_ev[pos] = first["expected_value"].to_numpy(dtype="float64")
    scores["best_offer_id"] = best_id
    scores["best_offer_expected_value"] = best_ev
    return scores, cross_sell, offers, decisions


def segment_migration(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """Customers per (segment at the previous as_of, segment now). Customers only in one of
    the two appear with ``(none)`` on the other side (new customers, customers gone)."""
    now = current[["customer_id", "rfm_segment"]].rename(columns={"rfm_segment": "to_segment"})
    if previous is None:
        before = pd.DataFrame({"customer_id": pd.Series([], dtype=object), "from_segment": pd.Series([], dtype=object)})
    else:
        before = previous[["customer_id", "rfm_segment"]].rename(columns={"rfm_segment": "from_segment"})
    both = before.merge(now, on="customer_id", how="outer")
    both[["from_segment", "to_segment"]] = both[["from_segment", "to_segment"]].astype(object).fillna("(none)")
    counts = both.groupby(["from_segment", "to_segment"], sort=True).size().rename("customers").reset_index()
    counts["customers"] = counts["customers"].astype("int64")
    return counts
