"""What the service does, without the web layer: champions + online snapshot + offer
catalog in, answers out. The catalog is optional: without one the state scores, and
``recommend`` refuses with ``NoCatalogError`` (nothing decided, nothing logged).

``ServingState`` is immutable once built; the service swaps a whole new state in when a
champion alias moves (hot reload), so a request sees one consistent set of models,
snapshot and catalog. ``score`` and ``recommend`` return plain JSON-ready dicts. The
scoring itself (inference, the offer engine, the contact policy) is the scoring core's,
shared with the nightly batch; everything the state needs from the data comes with the
published snapshot (features, their windows, the contact history), never from a raw
source.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from features.definitions import slug
from features.online_fresh import FreshVectors
from features.snapshot import SchemaMismatchError, feature_config
from scoring.arms import CONTROL
from scoring.catalog import Catalog, NoCatalogError, no_catalog_message
from scoring.champions import Champion, NotReadyError, categories_of, model_versions
from scoring.contacts import ContactHistory
from scoring.inference import SCORE_KEYS, apply_priors, priors, score_block, to_customer_scores, top_reasons
from scoring.live import LiveDecision, Versions, decide_one, decide_one_grouped
from scoring.nbo import CategorySpend, CustomerScores, offer_reasons
from scoring.uplift_scores import UpliftChampion, missing_columns, uplift_for
from training.predictor import block_from_frame, block_from_records

log = logging.getLogger(__name__)

#: snapshot columns the engine reads besides the models' inputs
EXTRA_COLUMNS = ("rfm_segment", "monetary", "avg_order_value")
#: customers sampled from the snapshot for cold-start priors and category spend
PRIOR_SAMPLE = 5000
#: reason codes per score
REASONS_PER_SCORE = 3
#: cross-sell categories listed per customer
TOP_CATEGORIES = 3
#: above this many ids a request goes through one get_many instead of single gets
_SINGLE_GET_LIMIT = 8


@dataclass
class ServingState:
    """Everything one request needs, loaded together and never mutated."""

    dataset: str
    champions: dict[str, Champion]
    store: object  # features.online_store.OnlineStore
    catalog: Catalog | None  # None: no catalog configured, /score only (recommend raises NoCatalogError)
    as_of: date
    snapshot_version: str
    spend: CategorySpend
    priors: dict[str, object]
    contacts: ContactHistory | None
    categories: list[str]
    columns: list[str]
    string_columns: set[str]
    loaded_at: float = field(default_factory=time.time)
    contacts_error: str | None = None  # the published history could not be read: recommend fails closed
    uplift: UpliftChampion | None = None  # the cvm-uplift champion (None: offers carry no uplift)
    fresh: FreshVectors | None = None  # the vectors brought up to the last event (None: snapshot only)

    @property
    def model_versions(self) -> dict[str, str]:
        """task -> version, and ``uplift`` -> the cvm-uplift version when one is loaded."""
        return model_versions(self.champions, self.uplift)

    def version_header(self) -> str:
        """``churn=3,next-purchase=2,...``: for the X-Model-Versions response header."""
        return ",".join(f"{t}={v}" for t, v in self.model_versions.items())


def published_contacts(store) -> ContactHistory | None:
    """The contact history published with the store's current snapshot (None: the dataset has none)."""
    snap = store.current()
    history = store.contacts() if snap is not None else None
    return ContactHistory.from_frame(history, snap.as_of) if history is not None else None


def read_contacts(store) -> tuple[ContactHistory | None, str | None]:
    """(history, None), or (None, the reason) when the published history cannot be read."""
    try:
        return published_contacts(store), None
    except Exception as exc:  # noqa: BLE001 - any failure means the policy cannot be applied
        return None, f"{type(exc).__name__}: {exc}"


def build_state(dataset: str, champions: Mapping[str, Champion], store, catalog: Catalog | None, *,
                contacts: ContactHistory | None = None, contacts_error: str | None = None,
                uplift: UpliftChampion | None = None, fresh: FreshVectors | None = None) -> ServingState:
    """Check that models, snapshot and catalog fit together; compute priors. The contact
    history is the one published with the snapshot (read here unless ``contacts`` is the
    current snapshot's, already read). Raises ``NotReadyError`` with the reason when they
    do not fit. ``catalog`` None: a state that scores and makes no offer (no catalog check).
    An ``uplift`` champion whose features the snapshot lacks is left out (logged): offers
    that need it then say "no uplift model for this offer"."""
    if not champions:
        raise NotReadyError("no champion model is registered (train one: cvm train all --as-of DATE)")
    snap = store.current()
    if snap is None:
        raise NotReadyError(f"no feature snapshot is published for dataset {dataset!r} "
                            f"(cvm features publish --dataset {dataset} --as-of DATE)")
    available = set(snap.columns)
    columns: list[str] = []
    string_columns: set[str] = set()
    for ch in champions.values():
        missing = [c for c in ch.model.columns if c not in available]
        if missing:
            raise NotReadyError(f"model {ch.name} version {ch.version} needs feature(s) the published snapshot "
                                f"{snap.version} lacks: {', '.join(missing[:10])}")
        columns += [c for c in ch.model.columns if c not in columns]
        string_columns |= ch.model.string_columns
    categories = categories_of(dict(champions))
    for c in [*EXTRA_COLUMNS, *(f"days_since_{slug(k)}" for k in categories),
              *(f"spend_share_{slug(k)}" for k in categories)]:
        if c in available and c not in columns:
            columns.append(c)
    if uplift is not None:
        lacking = missing_columns(uplift, available)
        if lacking:
            log.error("uplift model %s version %s not used: the published snapshot %s lacks %s", uplift.name,
                      uplift.version, snap.version, ", ".join(lacking[:10]))
            uplift = None
        else:
            columns += [c for c in uplift.columns if c not in columns]
    string_columns |= {c for c in columns if snap.columns.get(c) == "string"}
    if catalog is not None:
        catalog.check_categories(categories if categories else [], "offer catalog")
    try:  # the windows the snapshot's values cover: offer values are scaled by its own
        windows = feature_config(snap.metadata)
    except (SchemaMismatchError, ValueError) as exc:
        raise NotReadyError(f"published snapshot {snap.version}: {exc}") from None
    if contacts_error is None and (contacts is None or contacts.as_of != snap.as_of):
        contacts, contacts_error = read_contacts(store)
    if contacts_error is not None:
        log.error("contact history unavailable: /recommend answers 503 until it can be read (%s)", contacts_error)
    ids = store.sample_ids(PRIOR_SAMPLE)
    frame = store.get_many(ids)
    block = block_from_frame(frame, [c for c in columns if c in frame.columns])
    scored = score_block(champions, block, len(ids))
    spend = (CategorySpend.from_snapshot(block, categories, window_days=windows.rfm_window_days,
                                       horizon_days=catalog.horizon_days)
             if catalog is not None and categories and "monetary" in block else CategorySpend({}))
    # a smoke test: every model must give finite outputs on real rows before it serves
    for key in SCORE_KEYS:
        values = scored.get(key)
        if values is not None and len(values) and not np.isfinite(values).any():
            raise NotReadyError(f"{key}: the model gives no finite score on the snapshot's customers")
    return ServingState(dataset, dict(champions), store, catalog, snap.as_of, snap.version, spend,
                        priors(scored, categories), contacts, categories, columns, string_columns,
                        contacts_error=contacts_error, uplift=uplift, fresh=fresh)


def _fetch(state: ServingState, ids: Sequence[str], *, fresh_vectors: bool = True
           ) -> tuple[np.ndarray, dict[str, np.ndarray], list[dict]]:
    """Feature rows of ``ids`` (request order) as a block, which were found, and how fresh each
    is: a customer with events since the snapshot gets the vector they bring (``features.fresh``),
    unless ``fresh_vectors`` is false (the snapshot's, as published)."""
    fresh = state.fresh.vectors(list(ids)) if state.fresh is not None and fresh_vectors else {}
    if len(ids) <= _SINGLE_GET_LIMIT:
        records = [fresh[i][0] if fresh.get(i, (None,))[0] is not None else state.store.get(i) for i in ids]
        found = np.array([r is not None for r in records], dtype=bool)
        block = block_from_records([r or {} for r in records], state.columns, state.string_columns)
    else:
        frame = state.store.get_many(list(ids))
        for pos, cid in enumerate(ids):
            vec = fresh.get(cid, (None,))[0]
            if vec is not None:
                for col in state.columns:
                    frame.at[pos, col] = vec.get(col)
                frame.at[pos, "found"] = True
        found, block = frame["found"].to_numpy(dtype=bool), block_from_frame(frame, state.columns)
    snapshot = {"source": "snapshot", "snapshot_as_of": state.as_of.isoformat(),
                "vector_as_of": state.as_of.isoformat(), "events_applied": 0, "last_event_at": None}
    freshness = [{"source": "events", **fresh[i][1].as_dict()} if fresh.get(i, (None,))[0] is not None
                 else snapshot for i in ids]
    return found, block, freshness


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def customer_scores(state: ServingState, ids: Sequence[str], *, reasons: bool = True, uplift: bool = False,
                    fresh_vectors: bool = True
                    ) -> tuple[CustomerScores, dict[str, object], np.ndarray, dict[str, np.ndarray], list[dict]]:
    """Scores of ``ids``; unknown customers get the population priors. With ``uplift``, the
    uplift of each catalog offer too (an unknown customer's is computed on its missing features)."""
    found, block, freshness = _fetch(state, ids, fresh_vectors=fresh_vectors)
    scored = score_block(state.champions, block, len(ids), reasons=reasons)
    lifts = uplift_for(state.uplift, block, len(ids), [o.id for o in state.catalog.offers]) \
        if uplift and state.catalog is not None else {}
    cs = apply_priors(to_customer_scores(ids, found, block, scored, state.categories, uplift=lifts), found,
                      state.priors)
    return cs, scored, found, block, freshness


def score(state: ServingState, ids: Sequence[str], *, reasons: bool = True) -> list[dict[str, object]]:
    """One answer per id, in request order (duplicates answered twice)."""
    cs, scored, found, block, freshness = customer_scores(state, ids, reasons=reasons)
    explain = {task.replace("-", "_"): _reasons(contrib, x, feats, block)
               for task, (contrib, x, feats) in scored["reasons"].items()} if reasons else {}
    top = _top_categories(cs.cross_sell, state.categories)
    results = []
    for i, cid in enumerate(ids):
        item: dict[str, object] = {
            "customer_id": cid,
            "found": bool(found[i]),
            "rfm_segment": cs.segment[i] if found[i] else None,
            "churn_probability": _num(cs.churn_probability[i]),
            "next_purchase_probability": _num(cs.next_purchase_probability[i]),
            "expected_orders": _num(cs.expected_orders[i]),
            "clv": _num(cs.clv[i]),
            "cross_sell": top[i],
            "reasons": {},
            "as_of": state.as_of.isoformat(),
            "freshness": freshness[i],
        }
        if not found[i]:
            item["cold_start"] = "unknown customer: population priors of the snapshot"
        elif explain:
            item["reasons"] = {task: rows[i] for task, rows in explain.items()}
        results.append(item)
    return results


def _top_categories(p: np.ndarray, categories: Sequence[str]) -> list[list[dict[str, object]]]:
    """Per row of ``p`` (customers x categories), the top categories by probability (NaN: not a candidate)."""
    n, k = p.shape
    if k == 0:
        return [[] for _ in range(n)]
    order = np.argsort(-np.nan_to_num(p, nan=-1.0), axis=1, kind="stable")[:, :TOP_CATEGORIES]
    rows = np.arange(n)[:, None]
    probs = np.round(p[rows, order], 6).tolist()
    cats = np.asarray(categories, dtype=object)[order].tolist()
    return [[{"category": c, "probability": q} for c, q in zip(cr, pr) if not math.isnan(q)] for cr, pr in zip(cats, probs)]


def _reasons(contrib: np.ndarray, x: np.ndarray, features: Sequence[str],
             block: Mapping[str, np.ndarray]) -> list[list[dict[str, object]]]:
    out = top_reasons(contrib, x, features, REASONS_PER_SCORE)
    for i, row in enumerate(out):
        for r in row:  # strings as the customer has them, not the model's codes
            raw = block.get(r["feature"])
            if raw is not None and raw.dtype == object:
                r["value"] = raw[i]
    return out


def recommend(state: ServingState, customer_id: str, *, decisions, now_us: int | None = None, k: int = 3,
              channel: str | None = None, exclude_offer_ids: Sequence[str] = (), source: str = "api"
              ) -> dict[str, object]:
    """The ``k`` best offers for one customer, best first, with their reasons: a decision,
    logged in ``decisions`` (a ``scoring.decisions`` store) before it is returned. Raises
    ``DecisionStoreUnavailable`` or ``PolicyUnavailable`` when it cannot be logged or the
    contact policy cannot be applied (the service answers 503), ``NoCatalogError`` when the
    state has no catalog (nothing is decided or logged)."""
    cs, found, kwargs = _decision_inputs(state, customer_id, now_us=now_us, k=k, channel=channel,
                                         exclude_offer_ids=exclude_offer_ids)
    made = decide_one(customer_id, cs, store=decisions, source=source, **kwargs)
    return _answer(state, customer_id, cs, found, made)


async def recommend_grouped(state: ServingState, customer_id: str, *, committer, now_us: int | None = None,
                            k: int = 3, channel: str | None = None,
                            exclude_offer_ids: Sequence[str] = ()) -> dict[str, object]:
    """``recommend`` for the service's event loop: the scores are computed here, the
    decision is logged by ``committer`` (``scoring.decisions.GroupCommitter``) together
    with those of concurrent requests, and the answer is built once it is on disk."""
    cs, found, kwargs = _decision_inputs(state, customer_id, now_us=now_us, k=k, channel=channel,
                                         exclude_offer_ids=exclude_offer_ids)
    made = await decide_one_grouped(customer_id, cs, committer=committer, **kwargs)
    return _answer(state, customer_id, cs, found, made)


def _decision_inputs(state: ServingState, customer_id: str, *, now_us: int | None, k: int, channel: str | None,
                     exclude_offer_ids: Sequence[str]):
    if state.catalog is None:
        raise NoCatalogError(no_catalog_message(state.dataset))
    if channel is not None and channel not in state.catalog.channels:
        raise ValueError(f"unknown channel {channel!r}; channels are {state.catalog.channels}")
    cs, _, found, _, freshness = customer_scores(state, [customer_id], reasons=False, uplift=True)
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    return cs, (found, freshness[0]), {
        "catalog": state.catalog, "spend": state.spend, "history": state.contacts,
        "history_error": state.contacts_error, "now_us": now_us,
        "versions": Versions(state.model_versions, state.catalog.version, state.snapshot_version),
        "k": k, "channel": channel, "exclude_offer_ids": exclude_offer_ids}


def _answer(state: ServingState, customer_id: str, cs: CustomerScores, seen: tuple[np.ndarray, dict],
            made: LiveDecision) -> dict[str, object]:
    (found, freshness), (d, result) = seen, (made.decision, made.result)
    offers = []
    if d.offer_id is not None:
        for item in d.offers:
            offer = state.catalog.offer(item["offer_id"])
            j = state.catalog.offers.index(offer)
            p, v = float(result["propensity"][0, j]), float(result["value"][0, j])
            lift = float(result["uplift"][0, j])
            offers.append({
                "offer_id": offer.id, "name": offer.name, "type": offer.type, "channel": item["channel"],
                "expected_value": round(float(result["expected_value"][0, j]), 4),
                "propensity": round(p, 6), "value": round(v, 4), "basis": offer.propensity,
                "uplift": _num(lift),
                "uplift_interval": ([_num(result["uplift_low"][0, j]), _num(result["uplift_high"][0, j])]
                                    if math.isfinite(lift) else None),
                "reasons": offer_reasons(offer, cs, 0, p, v, state.spend,
                                         uplift=(lift, float(result["uplift_low"][0, j]),
                                                 float(result["uplift_high"][0, j]))),
            })
    answer: dict[str, object] = {"customer_id": customer_id, "found": bool(found[0]),
                                 "rfm_segment": cs.segment[0] if found[0] else None,
                                 "decision_id": d.decision_id, "arm": d.arm, "pscore": round(d.pscore, 6),
                                 "offers": offers, "as_of": state.as_of.isoformat(), "freshness": freshness}
    if not found[0]:
        answer["cold_start"] = "unknown customer: offers chosen on population priors"
    if d.arm == CONTROL and made.choice.n_eligible[0] > 0:
        answer["control_group"] = ("the customer is in the global control group this period: no offer is made "
                                   "(the decision is logged, to measure the lift offers cause)")
    elif not offers:
        why = {state.catalog.offers[j].id: result["why"][0, j] for j in range(len(state.catalog.offers))}
        answer["no_offer_reasons"] = why
    return answer
