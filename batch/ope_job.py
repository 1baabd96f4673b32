"""``cvm nbo evaluate --log FROM..TO``: what candidate offer policies would have earned, estimated
from the logged decisions of the policy that ran (off-policy evaluation, ``scoring.ope``).

The rounds: each customer's first decision in ``[FROM, TO)`` (UTC), the unit the uplift
training uses too (a control customer is held out for the whole period; later decisions of
the same customer share its outcome). Per round:

* the logged action: the offer presented first, or ``NO_OFFER`` (control, nothing eligible),
  and its ``pscore`` (``scoring.arms``: the logging policy's probability of that action);
* the reward: a ``convert`` outcome of the customer within ``horizon_days`` after the
  decision (1/0), or with ``reward="value"`` the sum of those conversions' values;
* the context: the decision's customer re-arbitrated as the engine saw it, with today's
  champions: the latest feature snapshot published on or before the decision day, and the
  contact state (the snapshot's contact history plus the log's contacts and outcomes before
  the day's first decision). Every candidate chooses among what was eligible then.

The candidates (``scoring.policies``) each give a distribution over the action list; IPS,
SNIPS and DR (``scoring.ope.evaluate_policies``) estimate their value per decision, with a
seeded bootstrap interval, the support of each estimate and warnings when a candidate picks
actions the log rarely explored. DR's reward model is each action's mean reward, cross-fitted
over two folds of customers. ``logged`` is the mean reward of the log as it ran.

On a dataset written by ``cvm synth`` with ``reward="convert"`` each candidate also gets its
**true value**: the mean over the rounds of ``sum_a pi(a|x) P(convert | shown a)``, from
``truth/response`` (``batch.simulation``'s outcome model). It is exact when every customer had
only the one decision (``cvm simulate --days 1 --visit-rate 1``); ``truth_exact`` says whether
that holds.

Writes ``ope.json`` and ``ope.csv`` under ``$CVM_HOME/batch/<dataset>/ope/<from>_<to>/`` and
logs them to MLflow (experiment ``cvm-ope``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from base.atomic import write_text
from base.dates import cutoff, partition_dir
from base.home import Home
from features.snapshot import feature_config, list_snapshots, read_contacts, read_metadata
from scoring.catalog import Catalog
from scoring.contacts import ContactHistory, ContactState, live_state
from scoring.decisions import from_us, open_decision_store, to_us
from scoring.live import since_us
from scoring.nbo import arbitrate
from scoring.ope import evaluate_policies
from scoring.policies import (
    BUILTIN,
    NO_OFFER,
    action_index,
    action_list,
    by_expected_value,
    by_popularity,
    by_propensity,
    cross_fitted_means,
    fold_of,
    logging_support,
    nothing,
    one_hot,
    pick_max,
    popularity,
    uniform,
    unsupported_share,
)

#: MLflow experiment the estimates are logged to
EXPERIMENT = "cvm-ope"
REWARDS = ("convert", "value")


class OPEError(ValueError):
    """The evaluation cannot run; the message says what to do."""


@dataclass
class OPEResult:
    table: pd.DataFrame  # scoring.ope.EVALUATION_COLUMNS, plus true_value on synthetic data
    path: Path
    payload: dict
    notes: list[str] = field(default_factory=list)


def parse_window(text: str) -> tuple[date, date]:
    """``FROM..TO`` (dates, TO exclusive) as two dates."""
    parts = text.split("..")
    if len(parts) != 2:
        raise OPEError(f"--log {text!r}: expected FROM..TO, two dates such as 2024-03-01..2024-04-01")
    try:
        start, end = (date.fromisoformat(p.strip()) for p in parts)
    except ValueError:
        raise OPEError(f"--log {text!r}: FROM and TO must be dates (YYYY-MM-DD)") from None
    if end <= start:
        raise OPEError(f"--log {text!r}: TO must be after FROM (TO is exclusive)")
    return start, end


def first_decisions(decisions: pd.DataFrame) -> pd.DataFrame:
    """Each customer's first decision (by time, then id)."""
    d = decisions.assign(customer_id=decisions["customer_id"].astype(str))
    d = d.sort_values(["customer_id", "decided_us", "decision_id"], kind="stable")
    return d.drop_duplicates("customer_id", keep="first").sort_values(["decided_us", "customer_id"],
                                                                     kind="stable").reset_index(drop=True)


def rewards(rounds: pd.DataFrame, outcomes: pd.DataFrame, *, horizon_days: int, reward: str) -> np.ndarray:
    """Per round: a ``convert`` of the customer in ``(decided, decided + horizon]`` (1/0), or the sum
    of their values (``reward="value"``)."""
    if reward not in REWARDS:
        raise OPEError(f"--reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    conv = outcomes[outcomes["type"] == "convert"]
    row = pd.DataFrame({"_row": np.arange(len(rounds)), "customer_id": rounds["customer_id"].astype(str),
                        "decided_us": rounds["decided_us"].astype("int64")})
    hit = row.merge(pd.DataFrame({"customer_id": conv["customer_id"].astype(str),
                                  "occurred_us": conv["occurred_us"].astype("int64"),
                                  "value": pd.to_numeric(conv["value"], errors="coerce").fillna(0.0)}),
                    on="customer_id")
    horizon = horizon_days * 86_400 * 1_000_000
    hit = hit[(hit["occurred_us"] > hit["decided_us"]) & (hit["occurred_us"] <= hit["decided_us"] + horizon)]
    if reward == "convert":
        got = np.zeros(len(rounds))
        got[hit["_row"].unique()] = 1.0
        return got
    return hit.groupby("_row")["value"].sum().reindex(np.arange(len(rounds)), fill_value=0.0).to_numpy(float)


@dataclass
class _Context:
    """The scored snapshot a day's decisions are re-arbitrated on."""

    day: date
    scores: object  # CustomerScores of the snapshot
    spend: object
    history: ContactHistory | None
    row: pd.Index  # customer id -> row of scores
    popularity: np.ndarray  # per offer of the logged catalog


def _contexts(home: Home, dataset: str, champions: dict, uplift, catalog: Catalog) -> Callable[[date], _Context]:
    from batch.offer_evaluation import score_frame

    root = home.features(dataset)
    days = list_snapshots(root) if root.exists() else []
    cache: dict[date, _Context] = {}

    def at(day: date) -> _Context:
        usable = [d for d in days if d <= day]
        if not usable:
            raise OPEError(f"no feature snapshot of {dataset} on or before {day}: the decisions of that day "
                           f"cannot be re-arbitrated (cvm features build --dataset {dataset} --as-of {day})")
        snap = max(usable)
        if snap not in cache:
            snap_dir = partition_dir(root, snap)
            frame = pd.read_parquet(snap_dir)
            window = feature_config(read_metadata(root, snap)).rfm_window_days
            cs, spend = score_frame(frame, champions, catalog, window_days=window, uplift=uplift)
            contacts = read_contacts(snap_dir)
            history = ContactHistory.from_frame(contacts, snap) if contacts is not None else None
            pop = popularity(cs.days_since_category, cs.categories, [o.target_category for o in catalog.offers])
            cache[snap] = _Context(snap, cs, spend, history, pd.Index(np.asarray(cs.customer_ids, dtype=object)),
                                   pop)
        return cache[snap]

    return at


def _uplift_catalog(catalog: Catalog) -> Catalog:
    return catalog.model_copy(update={"offers": [o.model_copy(update={"propensity": "uplift"})
                                                 for o in catalog.offers]})


def _state(history: ContactHistory | None, ids: list[str], catalog: Catalog,
           live: tuple[pd.DataFrame, pd.DataFrame], now_us: int) -> ContactState:
    """The contact state at ``now_us``: the snapshot's history plus the log's contacts and outcomes before it."""
    hist = history.state(ids, catalog) if history is not None else ContactState.none(len(ids), catalog)
    return hist.plus(live_state(ids, catalog, live[0], live[1], now_us))


def _candidates(names: Sequence[str], *, catalog: Catalog, extra: dict[str, Catalog], actions: list[str],
                rounds: pd.DataFrame, ctx_of: Callable[[date], _Context], live: tuple[pd.DataFrame, pd.DataFrame],
                has_uplift: bool) -> tuple[dict[str, np.ndarray], np.ndarray, float, np.ndarray]:
    """Each candidate's ``n x K`` distribution over ``actions``, which rounds had a context, and the
    share of those where the re-arbitrated engine's first choice is the logged ``policy_offer_id``
    (1.0 when the contexts are rebuilt as the decisions saw them, with the same models), and the
    actions the logging policy could take in each round (``scoring.policies.logging_support``)."""
    from batch.simulation import subset_scores

    n, k = len(rounds), len(actions)
    out = {name: np.zeros((n, k)) for name in names}
    known = np.zeros(n, dtype=bool)
    engine_top = np.full(n, -1, dtype="int64")  # the re-arbitrated engine's first choice, catalog column
    support = np.ones((n, k), dtype=bool)  # what the logging policy could take (rounds without context: unknown)
    index = {a: j for j, a in enumerate(actions)}
    columns = [index[o.id] for o in catalog.offers]
    days = pd.to_datetime(rounds["decided_us"], unit="us").dt.date.to_numpy()
    contacts, outcomes = live
    for day in sorted(set(days)):
        rows = np.flatnonzero(days == day)
        ctx = ctx_of(day)
        where = ctx.row.get_indexer(rounds["customer_id"].to_numpy(dtype=object)[rows])
        ok = where >= 0
        known[rows[ok]] = True
        rows, where = rows[ok], where[ok]
        if not len(rows):
            continue
        now_us = int(rounds["decided_us"].to_numpy()[rows].min())
        ids = [str(c) for c in rounds["customer_id"].to_numpy(dtype=object)[rows]]
        cs = subset_scores(ctx.scores, where)

        before = contacts[contacts["decided_us"] < now_us], outcomes[outcomes["occurred_us"] < now_us]
        state = _state(ctx.history, ids, catalog, before, now_us)
        result = arbitrate(cs, catalog, ctx.spend, state)
        engine_top[rows] = by_expected_value(result)
        exp = catalog.experiment
        support[rows] = logging_support(result["eligible"], columns, k, control_share=exp.control_share,
                                        exploration_share=exp.exploration_share, top=engine_top[rows])
        for name in names:
            if name == "current":
                continue  # from the log, below
            if name == "propensity":
                dist = one_hot(by_propensity(result), columns, k)
            elif name == "most-popular":
                dist = one_hot(by_popularity(result, ctx.popularity), columns, k)
            elif name == "random":
                dist = uniform(result["eligible"], columns, k)
            elif name == "no-offer":
                dist = nothing(len(rows), k)
            elif name == "uplift":
                if not has_uplift:
                    raise OPEError("candidate uplift needs an uplift champion: cvm train uplift --dataset D "
                                   "--as-of DATE first")
                up = arbitrate(cs, _uplift_catalog(catalog), ctx.spend, state)
                # among what the logging engine could present: the log supports nothing else
                dist = one_hot(pick_max(result["eligible"] & up["eligible"], up["expected_value"]), columns, k)
            else:
                other = extra[name]
                res = arbitrate(cs, other, ctx.spend, _state(ctx.history, ids, other, before, now_us))
                dist = one_hot(by_expected_value(res), [index[o.id] for o in other.offers], k)
            out[name][rows] = dist
    if "current" in names:
        out["current"] = one_hot(np.arange(n), action_index(rounds["policy_offer_id"].tolist(), actions), k)
    for name in names:  # rounds without a context (not in the snapshot): the candidate presents nothing
        if name != "current":
            out[name][~known, k - 1] = 1.0
    ids = np.asarray([o.id for o in catalog.offers] + [None], dtype=object)
    again = pd.Series(ids[engine_top]).fillna(NO_OFFER).to_numpy()
    logged = rounds["policy_offer_id"].fillna(NO_OFFER).to_numpy()
    agreement = float((again == logged)[known].mean()) if known.any() else float("nan")
    return out, known, agreement, support


def true_values(home: Home, dataset, catalog_offers: dict[str, str | None], rounds: pd.DataFrame,
                actions: list[str], candidates: dict[str, np.ndarray]) -> dict[str, float] | None:
    """Synthetic data: each candidate's mean ``sum_a pi(a|x) P(convert | shown a)`` over the rounds
    (``batch.simulation.convert_probability`` on ``truth/response``); None without a truth."""
    from batch.simulation import convert_probability, customer_persons, response_matrix
    from sources.synth.truth import person_of_record, read_response

    try:
        response, records = read_response(dataset.root), person_of_record(dataset.root)
    except FileNotFoundError:
        return None
    person = customer_persons(home, dataset.name, records)
    categories = sorted({c for c in catalog_offers.values() if c})
    pc, pt = response_matrix(rounds["customer_id"].astype(str).to_numpy(), person, response, categories)
    n = len(rounds)
    p = np.empty((n, len(actions)))  # P(convert | shown action a)
    for a, offer in enumerate(actions):
        shown = np.zeros_like(pc, dtype=bool)
        cat = catalog_offers.get(offer) if offer != NO_OFFER else None
        if cat:
            shown[:, categories.index(cat)] = True
        p[:, a] = convert_probability(pc, pt, shown)
    return {name: float((dist * p).sum(axis=1).mean()) for name, dist in candidates.items()}


def resolve_policies(specs: Sequence[str], categories: Sequence[str]) -> tuple[list[str], dict[str, Catalog]]:
    """Candidate names: built-in names as they are, a catalog file by its stem (loaded here)."""
    from scoring.catalog import CatalogError, load_catalog

    names, extra = [], {}
    for spec in specs or BUILTIN:
        if spec in BUILTIN:
            names.append(spec)
            continue
        path = Path(spec)
        if not path.exists():
            raise OPEError(f"--policy {spec!r} is neither a built-in candidate ({', '.join(BUILTIN)}) nor a "
                           "catalog file")
        try:
            other = load_catalog(path, categories)
        except CatalogError as e:
            raise OPEError(f"--policy {spec}: {e}") from None
        name = f"catalog:{path.stem}"
        names.append(name)
        extra[name] = other
    return list(dict.fromkeys(names)), extra


def run_ope(home: Home, dataset_spec: str, start: date, end: date, *, policies: Sequence[str] = (),
            decisions_url: str | None = None, catalog_path: Path | None = None, horizon_days: int = 28,
            reward: str = "convert", n_bootstrap: int = 1000, alpha: float = 0.05, seed: int = 0,
            out: Path | None = None, champions: dict | None = None, uplift=None,
            step: Callable[[str], None] | None = None) -> OPEResult:
    """Estimate the candidates' value on the rounds of ``[start, end)`` and write ``ope.json``.
    ``champions``/``uplift``: models to re-arbitrate with (default: the registry's champions)."""
    from scoring.catalog import load_catalog, no_catalog_message, resolve_catalog_path
    from scoring.champions import RegistrySource, categories_of
    from sources.dataset import resolve_dataset

    say = step or (lambda _m: None)
    if reward not in REWARDS:
        raise OPEError(f"--reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    ds = resolve_dataset(dataset_spec, home)
    path = resolve_catalog_path(dataset_spec, catalog_path)
    if path is None:
        raise OPEError(no_catalog_message(ds.name))
    if champions is None:
        source = RegistrySource(home.mlflow_tracking_uri())
        champions = source.champions()
        uplift = source.uplift() if uplift is None else uplift
    if "cross-sell" not in champions:
        raise OPEError("no cross-sell champion to re-arbitrate the decisions with: cvm train cross-sell first")
    categories = categories_of(champions)
    catalog = load_catalog(path, categories)
    names, extra = resolve_policies(policies, categories)

    say("read the decision log")
    lo, hi = cutoff(start), cutoff(end)
    store = open_decision_store(decisions_url, home, ds.name)
    try:
        if decisions_url is None and not getattr(store, "path", Path("x")).exists():
            raise OPEError(f"{ds.name} has no decision log under {home.decisions(ds.name)}: serve or simulate "
                           "decisions first (CVM_DECISIONS_URL or --decisions names another log)")
        decisions = store.decisions(to_us(lo), to_us(hi))
        outcomes = store.outcomes(to_us(lo), to_us(hi))
        live = store.live(since_us(catalog, to_us(lo)))
    finally:
        store.close()
    if decisions.empty:
        raise OPEError(f"no logged decision in {start}..{end} (UTC, TO exclusive)")
    rounds = first_decisions(decisions)
    actions = action_list([o.id for o in catalog.offers], *[[o.id for o in c.offers] for c in extra.values()])
    action = action_index(rounds["offer_id"].tolist(), actions)
    pscore = rounds["pscore"].to_numpy(dtype="float64")
    r = rewards(rounds, outcomes, horizon_days=horizon_days, reward=reward)
    last_outcome = int(outcomes["occurred_us"].max()) if len(outcomes) else None
    notes = []
    immature = int((rounds["decided_us"] + horizon_days * 86_400_000_000 > to_us(datetime.now(UTC))).sum())
    if immature:
        notes.append(f"{immature:,} rounds are less than {horizon_days} days old: their outcomes are still coming")
    catalogs = sorted(set(rounds["catalog_version"].astype(str)))
    if catalogs != [catalog.version]:
        notes.append(f"the log was made with catalog version(s) {', '.join(catalogs)}; the candidates use "
                     f"{catalog.version}")

    say(f"re-arbitrate {len(rounds):,} decisions")
    ctx_of = _contexts(home, ds.name, champions, uplift, catalog)
    dists, known, agreement, support = _candidates(names, catalog=catalog, extra=extra, actions=actions, rounds=rounds, ctx_of=ctx_of,
                               live=live, has_uplift=uplift is not None)
    if agreement < 1:
        notes.append(f"the engine re-run on the rebuilt contexts agrees with the logged policy's first offer on "
                     f"{agreement:.1%} of the rounds: the models, snapshot or catalog differ from those the log "
                     "was made with, so the candidates are today's engine, not the one that decided")
    if (~known).any():
        notes.append(f"{int((~known).sum()):,} rounds' customers are not in the snapshot of their day: every "
                     "candidate but current presents nothing to them")

    say("estimate")
    q_hat = cross_fitted_means(action, r, fold_of(rounds["customer_id"].tolist()), len(actions))
    table = evaluate_policies(r, action, pscore, dists, q_hat, actions, n_bootstrap=n_bootstrap, alpha=alpha,
                              random_state=seed)
    truth = (true_values(home, ds, {o.id: o.target_category for c in (catalog, *extra.values()) for o in c.offers},
                         rounds, actions, dists) if reward == "convert" else None)
    unsupported = {name: unsupported_share(d, support) for name, d in dists.items()}
    table["unsupported_share"] = table["candidate"].map(unsupported)
    for name, share in unsupported.items():
        if share > 0:
            notes.append(f"{name}: {share:.1%} of its choices are actions the logging policy could not take for "
                         "that customer then (not eligible, or not explored): no estimator sees them, so its "
                         "estimates leave them out and may be off by up to that share of the reward range")
    if truth is not None:
        table["true_value"] = table["candidate"].map(truth)
    repeat = int(decisions["customer_id"].astype(str).duplicated().sum())

    out = out or home.batch(ds.name) / "ope" / f"{start}_{end}"
    out.mkdir(parents=True, exist_ok=True)
    logged_counts = pd.Series(actions)[action].value_counts()
    payload = {
        "dataset": ds.name, "start": str(start), "end": str(end), "horizon_days": horizon_days, "reward": reward,
        "rounds": len(rounds), "decisions": len(decisions), "context_agreement": agreement, "repeat_decisions": repeat,
        "logged_value": float(r.mean()), "arms": {str(a): int(v) for a, v in
                                                  rounds["arm"].value_counts().sort_index().items()},
        "logged_actions": {str(a): int(v) for a, v in logged_counts.items()},
        "last_outcome": from_us(last_outcome).isoformat() if last_outcome is not None else None,
        "candidates": names, "catalog_version": catalog.version, "alpha": alpha, "n_bootstrap": n_bootstrap,
        "seed": seed, "reward_model": "per-action mean reward, cross-fitted over 2 folds of customers",
        "truth": None if truth is None else {"values": truth, "exact": repeat == 0,
                                              "definition": "mean over the rounds of sum_a pi(a|x) P(convert | "
                                                            "shown a), truth/response"},
        "notes": notes, "estimates": json.loads(table.to_json(orient="records", double_precision=15)),
    }
    write_text(out / "ope.json", json.dumps(payload, indent=2, default=str))
    write_text(out / "ope.csv", table.to_csv(index=False))
    return OPEResult(table, out / "ope.json", payload, notes)


def log_to_mlflow(result: OPEResult, tracking_uri: str, dataset: str) -> str:
    """Log the estimates (metrics ``<candidate>.<method>`` with their interval) and ``ope.json`` /
    ``ope.csv`` to MLflow (experiment ``cvm-ope``); the run id. A client bound to ``tracking_uri``:
    the process's MLflow settings are left as they were."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(EXPERIMENT)
    p = result.payload
    run = client.create_run(experiment_id, run_name=f"ope {p['start']}..{p['end']}",
                            tags={"dataset": dataset, "reward": p["reward"], "catalog_version": p["catalog_version"]})
    run_id = run.info.run_id
    try:
        for key in ("horizon_days", "rounds", "n_bootstrap", "seed"):
            client.log_param(run_id, key, p[key])
        client.log_param(run_id, "candidates", ",".join(p["candidates"]))
        client.log_metric(run_id, "logged_value", p["logged_value"])
        for row in result.table.itertuples(index=False):
            key = f"{row.candidate}.{row.method}".replace(":", "_")
            for part, value in (("value", row.value), ("low", row.ci_low), ("high", row.ci_high)):
                if np.isfinite(value):
                    client.log_metric(run_id, f"{key}.{part}", float(value))
        client.log_artifact(run_id, str(result.path))
        client.log_artifact(run_id, str(result.path.with_name("ope.csv")))
    finally:
        client.set_terminated(run_id)
    return run_id
