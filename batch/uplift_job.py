"""``cvm train uplift``'s wiring: the randomised assignments (the decision log's arms, or
the dataset's randomised contacts), a feature snapshot before them, the synthetic truth
when there is one, then ``training.uplift.pipeline.train_uplift``.

Where the assignments come from, in order: the decision log (``--log``, else the dataset's
log under CVM_HOME, else ``CVM_DECISIONS_URL``) when it holds control-arm decisions; else
the dataset's ``contacts`` with a ``group`` column. Neither: ``NoRandomisedDataError``
saying so (the CLI exits 2). Complete Journey has neither: its campaigns were not
randomised, so no uplift can be learnt from it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from base.home import Home
from features.publish import build_and_publish
from features.snapshot import list_snapshots, read_schema, read_snapshot
from scoring.arms import CONTROL
from scoring.catalog import Catalog
from scoring.decisions import open_decision_store
from training.uplift.config import UpliftConfig
from training.uplift.data import NoRandomisedDataError, from_contacts, from_decision_log
from training.uplift.pipeline import UpliftResult, train_uplift

DEFAULT_CONFIG = Path("experiments") / "uplift.yaml"


def load_config(path: Path | None) -> UpliftConfig:
    """The ``uplift`` section of ``path``, else of ``experiments/uplift.yaml`` when present,
    else the defaults (validated like every experiment file: unknown keys are errors)."""
    from training.experiment import load_config as load_experiment

    chosen = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    return load_experiment(chosen).uplift if chosen is not None else UpliftConfig()


def _log_assignments(url: str | None, home: Home, dataset: str, as_of: date, horizon: int) -> tuple[pd.DataFrame, str]:
    store = open_decision_store(url, home, dataset)
    try:
        if url is None and not store.path.exists():  # the dataset's embedded log was never written
            return pd.DataFrame(), "no decision log"
        decisions, outcomes = store.decisions(), store.outcomes()
    finally:
        store.close()
    if decisions.empty or not (decisions["arm"] == CONTROL).any():
        return pd.DataFrame(), f"the decision log ({len(decisions)} decisions) has no control-arm decision"
    return (from_decision_log(decisions, outcomes, as_of=as_of, horizon_days=horizon, control_arm=CONTROL),
            "decision log")


def _contact_assignments(dataset, as_of: date, horizon: int) -> tuple[pd.DataFrame, str]:
    from base.engines import open_engine
    from sources.load import load_sources

    if not dataset.has("contacts"):
        return pd.DataFrame(), "the dataset has no contacts table"
    with open_engine("duckdb") as engine:
        sources = load_sources(dataset, engine)
        contacts = engine.execute(sources["contacts"])
        if "group" not in contacts.columns or contacts["group"].isna().all():
            return pd.DataFrame(), "its contacts have no `group` column (treatment/control)"
        tx = engine.execute(sources["transactions"].select("customer_id", "timestamp", "amount"))
    return from_contacts(contacts, tx, as_of=as_of, horizon_days=horizon), "randomised contacts"


def _features(home: Home, dataset, first: date) -> tuple[pd.DataFrame, list[str]]:
    """The latest published snapshot on or before ``first`` (published first if none):
    its features use only data before every assignment."""
    root = home.features(dataset.name)
    days = [d for d in list_snapshots(root) if d <= first] if root.exists() else []
    day = max(days) if days else first
    if not days:
        build_and_publish(dataset, day, home)
    schema = read_schema(root)
    columns = [c["name"] for c in schema["columns"] if c["group"] != "key"]
    frame = read_snapshot(root, day)
    frame["customer_id"] = frame["customer_id"].astype(str)
    return frame[["customer_id", *columns]], columns


def true_uplift(dataset, home: Home, catalog: Catalog, pairs: pd.DataFrame) -> pd.DataFrame | None:
    """For a synthetic dataset: each (customer, offer)'s true uplift on the simulation's
    outcome (``batch.simulation``): P(convert | shown only this offer) - P(convert | nothing)."""
    from batch.simulation import convert_probability, customer_persons, response_matrix
    from sources.synth.truth import person_of_record, read_response

    try:
        response, records = read_response(dataset.root), person_of_record(dataset.root)
    except FileNotFoundError:
        return None
    person = customer_persons(home, dataset.name, records)
    categories = sorted({o.target_category for o in catalog.offers if o.target_category})
    ids = pairs["customer_id"].astype(str).to_numpy()
    pc, pt = response_matrix(ids, person, response, categories)
    none = convert_probability(pc, pt, np.zeros_like(pc, dtype=bool))
    col = {c: j for j, c in enumerate(categories)}
    target = {o.id: o.target_category for o in catalog.offers}
    j = pairs["offer_id"].map(lambda o: col.get(target.get(o))).to_numpy(dtype=object)
    out = np.zeros(len(pairs))
    has = pd.notna(j)  # an offer without a target category (retention, ...) maps to None, read as NaN
    if has.any():
        shown = np.zeros_like(pc, dtype=bool)
        shown[np.flatnonzero(has), j[has].astype(int)] = True
        out[has] = (convert_probability(pc, pt, shown) - none)[has]
    return pairs[["customer_id", "offer_id"]].assign(true_uplift=out)


def run_uplift_training(home: Home, dataset_spec: str, as_of: date, *, log_url: str | None = None,
                        config: Path | None = None, catalog_path: Path | None = None, register: bool = True,
                        step: Callable[[str], None] | None = None) -> UpliftResult:
    from scoring.catalog import default_catalog_path, load_catalog, resolve_catalog_path
    from sources.dataset import resolve_dataset

    cfg = load_config(config)
    dataset = resolve_dataset(dataset_spec, home)
    say = step or (lambda _m: None)
    say("read randomised assignments")
    assignments, source = _log_assignments(log_url, home, dataset.name, as_of, cfg.horizon_days)
    why_not = [source] if assignments.empty else []
    if assignments.empty:
        assignments, source = _contact_assignments(dataset, as_of, cfg.horizon_days)
        if assignments.empty:
            why_not.append(source)
    if assignments.empty:
        raise NoRandomisedDataError(
            f"{dataset.name}: nothing randomised to learn uplift from before {as_of} ({'; '.join(why_not)}). "
            "Uplift needs contacts assigned at random to treatment or control: run the closed loop "
            "(cvm serve, or cvm simulate on a synthetic dataset, with a control group in the catalog's "
            "experiment) and pass its log with --log, or give the contacts table a `group` column.")
    first = assignments["assigned_at"].min().date()
    say(f"features as of {first} or before")
    features, columns = _features(home, dataset, first)
    # the truth's catalog: the one the simulation ran with (cvm simulate's default too)
    path = catalog_path or resolve_catalog_path(dataset_spec) or default_catalog_path("synthetic")
    truth = true_uplift(dataset, home, load_catalog(path), assignments)
    return train_uplift(assignments, features, columns, as_of=as_of, cfg=cfg, home=home, dataset=dataset.name,
                        source=source, truth=truth, register=register, step=step)
