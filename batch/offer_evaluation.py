"""Offline evaluation of the next-best-offer engine on what customers did next (``cvm nbo evaluate``).

At a decision date ``as_of`` every customer of the feature snapshot gets one cross-sell
offer from each policy, chosen among the same rule-eligible offers (segments, recent
purchases, cooldowns, caps):

* ``nbo``: the engine's choice, highest expected value (propensity x value x lever - cost);
* ``propensity``: the highest cross-sell probability, ignoring value (an ablation);
* ``most_popular``: the category most customers bought in the 91 days before as_of;
* ``random``: uniformly among the eligible offers (seeded).

Outcomes come from transactions in ``[as_of, as_of + horizon)``, data no model or
snapshot has seen: ``hit_rate`` is the share of customers who bought the offered
category, ``spend`` their mean spend in it, ``value`` the mean of margin x that spend
minus the offer's cost. Observational: customers were not actually sent these offers, so
this measures how well a policy finds customers about to buy a category, not the uplift
a campaign would cause.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import ibis
import numpy as np
import pandas as pd

from base.dates import cutoff, partition_dir
from base.engines import open_engine
from base.home import Home
from features.snapshot import feature_config, read_contacts, read_metadata
from profiles.link import linked_tables
from scoring.catalog import Catalog, load_catalog, no_catalog_message, resolve_catalog_path
from scoring.champions import RegistrySource, categories_of
from scoring.contacts import ContactHistory, ContactState
from scoring.inference import score_block, to_customer_scores
from scoring.nbo import CategorySpend, CustomerScores, arbitrate
from scoring.uplift_scores import UpliftChampion, uplift_for
from sources.dataset import resolve_dataset
from sources.load import load_sources
from training.predictor import block_from_frame

POLICIES = ("nbo", "propensity", "most_popular", "random")
POPULARITY_DAYS = 91


class EvaluationError(RuntimeError):
    """The evaluation cannot run; the message says what to do."""


def choose(policy: str, result: dict[str, np.ndarray], popularity: np.ndarray, rng: np.random.Generator
           ) -> np.ndarray:
    """Column index of the chosen offer per customer (-1: no eligible offer)."""
    why = result["why"]
    eligible = (why == "") | (why == "expected value not above the minimum")
    n, m = eligible.shape
    if policy == "nbo":
        key = np.where(eligible, result["_ev_all"], -np.inf)
    elif policy == "propensity":
        key = np.where(eligible, result["propensity"], -np.inf)
    elif policy == "most_popular":
        key = np.where(eligible, np.broadcast_to(popularity, (n, m)), -np.inf)
    elif policy == "random":
        key = np.where(eligible, rng.random((n, m)), -np.inf)
    else:
        raise ValueError(f"unknown policy {policy!r}")
    pick = np.argmax(key, axis=1)
    return np.where(eligible.any(axis=1), pick, -1)


def evaluate(scores: CustomerScores, catalog: Catalog, spend: CategorySpend, contacts: ContactState,
             outcomes: pd.DataFrame, popularity: dict[str, float], seed: int = 0) -> pd.DataFrame:
    """One row per policy: customers offered, hit rate, mean spend and value realised.

    ``outcomes``: ``customer_id``, ``category``, ``spend`` in the horizon (one row per pair)."""
    xs = [o for o in catalog.offers if o.type == "cross_sell"]
    if not xs:
        raise EvaluationError("the catalog has no cross_sell offer to evaluate")
    sub = catalog.model_copy(update={"offers": xs})
    result = dict(arbitrate(scores, sub, spend, _subset(contacts, catalog, xs)))
    lever = np.array([o.lever for o in xs])
    cost = np.array([o.cost for o in xs])
    result["_ev_all"] = result["propensity"] * result["value"] * lever - cost
    pop = np.array([popularity.get(o.target_category, 0.0) for o in xs])
    bought = outcomes.set_index(["customer_id", "category"])["spend"]
    ids = np.asarray(scores.customer_ids, dtype=object)
    rows = []
    rng = np.random.default_rng(seed)
    for policy in POLICIES:
        pick = choose(policy, result, pop, rng)
        has = pick >= 0
        cats = np.array([xs[j].target_category for j in pick[has]], dtype=object)
        keys = pd.MultiIndex.from_arrays([ids[has], cats])
        spent = bought.reindex(keys).fillna(0.0).to_numpy(dtype="float64")
        margin = np.array([xs[j].value.margin for j in pick[has]])
        value = margin * spent - cost[pick[has]]
        rows.append({"policy": policy, "customers": int(has.sum()),
                     "hit_rate": float((spent > 0).mean()) if has.any() else float("nan"),
                     "spend": float(spent.mean()) if has.any() else float("nan"),
                     "value": float(value.mean()) if has.any() else float("nan"),
                     "expected_value": float(np.nanmean(result["_ev_all"][np.flatnonzero(has), pick[has]]))
                     if has.any() else float("nan")})
    table = pd.DataFrame(rows)
    base = table.set_index("policy").loc["random", "hit_rate"]
    table["hit_rate_lift"] = table["hit_rate"] / base if base > 0 else float("nan")
    return table


def _subset(contacts: ContactState, catalog: Catalog, offers) -> ContactState:
    idx = [catalog.offers.index(o) for o in offers]
    return ContactState(contacts.total, contacts.offer_count[:, idx], contacts.offer_last[:, idx])


def evaluate_and_log(dataset: str, as_of: date, home: Home, *, catalog_path: Path | None = None,
                     horizon_days: int = 28, seed: int = 0) -> pd.DataFrame:
    """Score the snapshot at ``as_of`` with the champions, evaluate on the following
    ``horizon_days``, log to MLflow (experiment ``cvm-nbo``)."""
    import mlflow

    from training import tracking

    ds = resolve_dataset(dataset, home)
    snap_dir = partition_dir(home.features(ds.name), as_of)
    if not snap_dir.exists():
        raise EvaluationError(f"no feature snapshot for {as_of} under {snap_dir.parent}: run "
                              f"cvm features build --dataset {dataset} --as-of {as_of}")
    chosen = resolve_catalog_path(dataset, catalog_path)
    if chosen is None:
        raise EvaluationError(no_catalog_message(ds.name))
    src = RegistrySource(home.mlflow_tracking_uri())
    versions = src.versions()
    if "cross-sell" not in versions:
        raise EvaluationError("no cross-sell champion: cvm train cross-sell --as-of DATE first")
    champions = {t: src.load(t, v) for t, v in versions.items()}
    catalog = load_catalog(chosen, categories_of(champions))
    frame = pd.read_parquet(snap_dir)
    window_days = feature_config(read_metadata(snap_dir.parent, as_of)).rfm_window_days
    scores, spend = score_frame(frame, champions, catalog, window_days=window_days)

    end = as_of + timedelta(days=horizon_days)
    with open_engine("duckdb", temp_dir=home.tmp(ensure=True)) as engine:
        tables, _ = linked_tables(load_sources(ds, engine), as_of)
        tx = tables["transactions"]
        last = engine.execute(tx.timestamp.max().name("last"))
        if pd.Timestamp(last).date() < end - timedelta(days=1):
            raise EvaluationError(f"the data ends on {pd.Timestamp(last).date()}, before the horizon "
                                  f"{as_of} + {horizon_days} days: choose an earlier --as-of")
        start, stop = ibis.timestamp(cutoff(as_of)), ibis.timestamp(cutoff(end))
        window = tx.filter((tx.timestamp >= start) & (tx.timestamp < stop) & tx.category.notnull())
        outcomes = engine.execute(window.group_by(["customer_id", "category"]).aggregate(spend=window.amount.sum()))
        outcomes["customer_id"] = outcomes["customer_id"].astype(str)
        since = ibis.timestamp(cutoff(as_of - timedelta(days=POPULARITY_DAYS)))
        before = tx.filter((tx.timestamp >= since) & (tx.timestamp < start))
        buyers = engine.execute(before.group_by("category").aggregate(n=before.customer_id.nunique()))
    popularity = dict(zip(buyers["category"], buyers["n"].astype(float)))
    history = read_contacts(snap_dir)
    state = (ContactHistory.from_frame(history, as_of).state(scores.customer_ids, catalog) if history is not None
             else ContactState.none(len(scores), catalog))
    table = evaluate(scores, catalog, spend, state, outcomes, popularity, seed)

    tracking.configure(home)
    mlflow.set_experiment("cvm-nbo")
    with mlflow.start_run(run_name=f"nbo {ds.name} {as_of}"):
        mlflow.set_tags({"dataset": ds.name, "as_of": as_of.isoformat(), "catalog_version": catalog.version,
                         **{f"model_{t}": v for t, v in versions.items()}})
        mlflow.log_params({"horizon_days": horizon_days, "seed": seed, "customers": len(scores),
                           "offers": sum(o.type == "cross_sell" for o in catalog.offers)})
        for row in table.itertuples(index=False):
            for metric in ("hit_rate", "spend", "value", "hit_rate_lift"):
                v = getattr(row, metric)
                if np.isfinite(v):
                    mlflow.log_metric(f"{row.policy}_{metric}", float(v))
        mlflow.log_text(table.to_csv(index=False), "nbo_evaluation.csv")
        mlflow.log_text(table.to_string(index=False), "nbo_evaluation.txt")
    return table


def score_frame(frame: pd.DataFrame, champions: dict, catalog: Catalog, *,
                window_days: int, uplift: UpliftChampion | None = None) -> tuple[CustomerScores, CategorySpend]:
    """Every customer of a snapshot frame scored by the champions (the batch's path);
    ``window_days``: the window the snapshot's ``monetary`` covers."""
    n = len(frame)
    block = block_from_frame(frame)
    categories = categories_of(champions)
    scores = to_customer_scores(frame["customer_id"].astype(str).tolist(), np.ones(n, dtype=bool), block,
                                score_block(champions, block, n), categories,
                                uplift=uplift_for(uplift, block, n, [o.id for o in catalog.offers]))
    spend = CategorySpend.from_snapshot(block, categories, window_days=window_days, horizon_days=catalog.horizon_days)
    return scores, spend
