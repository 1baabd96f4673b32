"""``cvm simulate``: the live loop run day by day on a synthetic world whose response to
offers is known, to check that the measured lift finds the true one.

Each simulated day a random share of the customers visits (``visit_rate``). For the
visitors the loop does what the service does, through the same scoring core
(``scoring.live.decide_many``: contact history + the simulation's decision log, arbitration,
arms, pscores): decide, log the decisions, report an impression for every offer shown and a
reject for some (the next day's caps, cooldowns and outcome rules count them). After the
last day every decided customer converts or not, drawn from the ground truth the
generator wrote (``truth/response``: per person and category, the probability of buying
in the category within the horizon if contacted about it, ``p_treated``, and if not,
``p_control``):

    P(convert) = 1 - prod over the catalog's target categories c of (1 - p_c),
    p_c = p_treated[c] if the customer was shown an offer for c, else p_control[c]

(a customer counts as treated in a category once, whatever the number of offers). The
conversion is attached to the customer's first decision, timed within the horizon after it,
with a value. ``cvm nbo impact``'s measurement (``scoring.impact``) then runs on the
simulation's log, and the report compares it with the **true lift**: the mean, over the
policy arm's customers, of P(convert | the offers they were shown) - P(convert | no offer),
both known exactly from the truth. Offers without a target category (retention, upsell,
loyalty) have no effect on this outcome in the simulation.

The simulation writes its own decision log (``decisions.sqlite`` in its output directory),
never the service's. Everything is seeded: one seed gives one run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from base.atomic import write_text
from base.dates import cutoff, partition_dir
from base.home import Home
from batch.offer_evaluation import score_frame
from features.publish import build_and_publish
from features.snapshot import feature_config, read_contacts, read_metadata
from scoring.catalog import Catalog
from scoring.champions import Champion, categories_of, model_versions
from scoring.contacts import ContactHistory
from scoring.decide import batch_decision_ids
from scoring.decisions import Outcome, SQLiteDecisionStore, to_us
from scoring.impact import ImpactReport, measure_impact
from scoring.live import Versions, decide_many, since_us
from scoring.nbo import CategorySpend, CustomerScores

#: hour of the day the simulated decisions are made (UTC)
DECISION_HOUR = 10


class SimulationError(ValueError):
    """The simulation cannot run (no ground truth, no champions, ...); the message says why."""


@dataclass
class SimulationResult:
    out: Path
    report: ImpactReport
    truth: dict[str, float]  # true lifts
    measured: dict[str, dict]  # measured lift (estimate, low, high, covered) per comparison
    days: int
    decisions: int
    customers: int


def golden_to_person(profile_map: pd.DataFrame, records: pd.DataFrame) -> pd.Series:
    """Golden customer id -> person id, by majority over the profile's source records."""
    joined = profile_map.merge(records[["customer_id", "person_id"]].rename(columns={"customer_id": "source_id"}),
                               on="source_id", how="inner")
    counts = joined.groupby(["customer_id", "person_id"]).size().rename("n").reset_index()
    best = counts.sort_values(["customer_id", "n", "person_id"], ascending=[True, False, True])
    return best.drop_duplicates("customer_id").set_index("customer_id")["person_id"]


def customer_persons(home: Home, dataset_name: str, records: pd.DataFrame) -> pd.Series:
    """Customer id -> true person id: through the latest identity resolution's profile map, or
    (no resolution) the source ids as they are (``records``: the truth's person_of_record)."""
    maps = sorted(home.profiles(dataset_name).glob("*/profile_map.parquet"))
    if maps:
        return golden_to_person(pd.read_parquet(maps[-1]), records)
    return records.set_index("customer_id")["person_id"]


def response_matrix(customers: np.ndarray, person: pd.Series, response: pd.DataFrame, categories: list[str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(p_control, p_treated), customers x categories; a customer without a person (or a
    category the truth lacks) gets probability 0 both ways."""
    pc = response.pivot_table(index="person_id", columns="category", values="p_control")
    pt = response.pivot_table(index="person_id", columns="category", values="p_treated")
    persons = person.reindex(customers).to_numpy()
    out = []
    for table in (pc, pt):
        grid = table.reindex(index=persons, columns=categories).to_numpy(dtype="float64")
        out.append(np.nan_to_num(grid, nan=0.0))
    return out[0], out[1]


def convert_probability(p_control: np.ndarray, p_treated: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """P(buys in at least one category) per customer; ``shown`` (customers x categories) marks
    the categories the customer was offered."""
    p = np.where(shown, p_treated, p_control)
    return 1.0 - np.prod(1.0 - p, axis=1)


def subset_scores(cs: CustomerScores, rows: np.ndarray) -> CustomerScores:
    return CustomerScores(
        customer_ids=np.asarray(cs.customer_ids, dtype=object)[rows], found=cs.found[rows], segment=cs.segment[rows],
        churn_probability=cs.churn_probability[rows], next_purchase_probability=cs.next_purchase_probability[rows],
        expected_orders=cs.expected_orders[rows], clv=cs.clv[rows], avg_order_value=cs.avg_order_value[rows],
        cross_sell=cs.cross_sell[rows], categories=cs.categories, days_since_category=cs.days_since_category[rows],
        uplift={o: tuple(a[rows] for a in v) for o, v in cs.uplift.items()})


class LocalDecider:
    """Decisions through the scoring core in this process, logged in the simulation's own log."""

    def __init__(self, cs: CustomerScores, *, catalog: Catalog, spend: CategorySpend, history: ContactHistory | None,
                 store: SQLiteDecisionStore, versions: Versions, key: str, k: int = 1):
        self.cs, self.catalog, self.spend, self.history, self.store = cs, catalog, spend, history, store
        self.versions, self.key, self.k = versions, key, k

    def decide(self, rows: np.ndarray, now: datetime, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(decision ids, arms, index of the first offer shown or -1) of the visitors ``rows``."""
        now_us = to_us(now)
        ids = np.asarray(self.cs.customer_ids, dtype=object)[rows]
        decision_ids = batch_decision_ids(ids, f"{self.key}:{day}")
        table, _, c = decide_many(subset_scores(self.cs, rows), catalog=self.catalog, spend=self.spend, history=self.history,
                                  live=self.store.live(since_us(self.catalog, now_us)), now_us=now_us,
                                  versions=self.versions, decision_ids=decision_ids, k=self.k, source="simulation")
        self.store.log_table(pd.DataFrame(table))
        return decision_ids, c.arm, c.first

    def report(self, outcomes: list[Outcome]) -> None:
        for i in range(0, len(outcomes), 1000):
            self.store.record_outcomes(outcomes[i:i + 1000])

    def log(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.store.decisions(), self.store.outcomes()


class RemoteDecider:
    """Decisions by a running ``cvm serve --simulation-clock`` over HTTP (``cvm simulate --url``):
    each visitor is a ``POST /recommend`` with the simulated time in ``at``, outcomes go to
    ``POST /outcomes``; the log the measurement reads is what the answers said."""

    def __init__(self, url: str, api_key: str, customer_ids: np.ndarray, catalog: Catalog, k: int = 1):
        import httpx

        self.client = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"},
                                   timeout=30)
        self.ids, self.k = customer_ids, k
        self.index = {o.id: j for j, o in enumerate(catalog.offers)}
        self.decisions: list[dict] = []
        self.outcomes: list[dict] = []

    def _post(self, path: str, body: dict) -> dict:
        r = self.client.post(path, json=body)
        if r.status_code != 200:
            raise SimulationError(f"{path} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    def decide(self, rows: np.ndarray, now: datetime, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, arms, first = [], [], []
        for cid in self.ids[rows]:
            a = self._post("/recommend", {"customer_id": str(cid), "k": self.k,
                                          "at": now.replace(tzinfo=UTC).isoformat()})
            offer = a["offers"][0]["offer_id"] if a["offers"] else None
            if offer is not None and offer not in self.index:
                raise SimulationError(f"the server offered {offer!r}, which the simulation's catalog lacks: give "
                                      "cvm simulate the server's catalog (--catalog)")
            ids.append(a["decision_id"])
            arms.append(a["arm"])
            first.append(self.index[offer] if offer is not None else -1)
            self.decisions.append({"decision_id": a["decision_id"], "customer_id": str(cid), "arm": a["arm"],
                                   "offer_id": offer, "policy_offer_id": None, "decided_us": to_us(now),
                                   "released": False})
        return np.asarray(ids, dtype=object), np.asarray(arms, dtype=object), np.asarray(first, dtype="int64")

    def report(self, outcomes: list[Outcome]) -> None:
        for i in range(0, len(outcomes), 1000):
            part = outcomes[i:i + 1000]
            self._post("/outcomes", {"outcomes": [o.model_dump(mode="json") for o in part]})
            self.outcomes += [{"decision_id": o.decision_id, "type": o.type, "occurred_us": to_us(o.timestamp),
                               "value": o.value} for o in part]

    def log(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        self.client.close()
        return (pd.DataFrame(self.decisions, columns=["decision_id", "customer_id", "arm", "offer_id",
                                                      "policy_offer_id", "decided_us", "released"]),
                pd.DataFrame(self.outcomes, columns=["decision_id", "type", "occurred_us", "value"]))


def simulate(*, customer_ids: np.ndarray, decider, catalog: Catalog, person: pd.Series, response: pd.DataFrame,
             start: date, days: int, seed: int, visit_rate: float = 0.1, reject_rate: float = 0.05,
             horizon_days: int = 28, mean_value: float = 20.0,
             progress: Callable[[int], None] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run the loop; returns per decided customer (arm, P_treated-as-shown, P_none) and the true lifts."""
    rng = np.random.default_rng([seed, 14])
    targets = sorted({o.target_category for o in catalog.offers if o.target_category})
    offer_target = np.array([targets.index(o.target_category) if o.target_category else -1
                             for o in catalog.offers] + [-1])
    ids = np.asarray(customer_ids, dtype=object)
    n = len(ids)
    p_control, p_treated = response_matrix(ids, person, response, targets)
    shown = np.zeros((n, len(targets)), dtype=bool)
    first_decision = np.full(n, None, dtype=object)
    first_time = np.zeros(n, dtype="int64")
    arm_of = np.full(n, None, dtype=object)
    for d in range(days):
        now = datetime.combine(start + timedelta(days=d), time(DECISION_HOUR))
        now_us = to_us(now)
        rows = np.flatnonzero(rng.random(n) < visit_rate)
        if len(rows):
            decision_ids, arms, first = decider.decide(rows, now, d)
            target = offer_target[first]
            treated = target >= 0
            shown[rows[treated], target[treated]] = True
            new = pd.isna(first_decision[rows])
            first_decision[rows[new]] = decision_ids[new]
            first_time[rows[new]] = now_us
            arm_of[rows[new]] = arms[new]
            seen = np.flatnonzero(first >= 0)
            outcomes = [Outcome(outcome_id=f"{decision_ids[i]}-impression", decision_id=decision_ids[i],
                                type="impression", timestamp=now + timedelta(hours=1)) for i in seen]
            rejects = seen[rng.random(len(seen)) < reject_rate]
            outcomes += [Outcome(outcome_id=f"{decision_ids[i]}-reject", decision_id=decision_ids[i], type="reject",
                                 timestamp=now + timedelta(hours=2)) for i in rejects]
            decider.report(outcomes)
        if progress is not None:
            progress(1)
    decided = np.flatnonzero(~pd.isna(first_decision))
    p_as_shown = convert_probability(p_control[decided], p_treated[decided], shown[decided])
    p_none = convert_probability(p_control[decided], p_treated[decided], np.zeros_like(shown[decided]))
    converted = rng.random(len(decided)) < p_as_shown
    delay = rng.uniform(0, horizon_days, len(decided))
    values = rng.gamma(2.0, mean_value / 2.0, len(decided))
    events = [Outcome(outcome_id=f"{first_decision[i]}-convert", decision_id=first_decision[i], type="convert",
                      timestamp=datetime.fromtimestamp(first_time[i] / 1e6, tz=UTC) + timedelta(days=float(delay[j])),
                      value=float(values[j]))
              for j, i in enumerate(decided) if converted[j]]
    decider.report(events)
    table = pd.DataFrame({"customer_id": ids[decided], "arm": arm_of[decided], "p_as_shown": p_as_shown,
                          "p_none": p_none, "converted": converted})
    policy = table[table["arm"] == "policy"]
    exploration = table[table["arm"] == "exploration"]
    truth = {
        # the policy's effect on its own customers: what they were shown vs nothing (known exactly)
        "conversion_rate.policy_vs_control": float((policy["p_as_shown"] - policy["p_none"]).mean()),
        # policy's customers as shown vs exploration's customers as shown (arms are random samples)
        "conversion_rate.policy_vs_exploration": float(policy["p_as_shown"].mean() - exploration["p_as_shown"].mean())
        if len(exploration) else float("nan"),
    }
    return table, truth


def run_simulation(home: Home, dataset, start: date, days: int, *, catalog: Catalog, champions: dict[str, Champion],
                   seed: int = 0, visit_rate: float = 0.1, out: Path | None = None, horizon_days: int = 28,
                   min_customers: int = 30, progress: Callable[[int], None] | None = None,
                   url: str | None = None, api_key: str | None = None, uplift=None) -> SimulationResult:
    """Simulate ``days`` days from ``start`` on ``dataset`` (a ``sources.dataset.Dataset``
    written by ``cvm synth``) and measure the impact; writes ``simulation.json``. With
    ``url``, a running ``cvm serve --simulation-clock`` decides over HTTP instead."""
    from sources.synth.truth import person_of_record, read_response

    if days < 1:
        raise SimulationError("--days must be at least 1")
    try:
        response = read_response(dataset.root)
        records = person_of_record(dataset.root)
    except FileNotFoundError as exc:
        raise SimulationError(f"{dataset.name}: the simulation needs the ground truth of a dataset written by "
                              f"cvm synth ({exc})") from None
    snap_dir = partition_dir(home.features(dataset.name), start)
    if not snap_dir.exists():
        build_and_publish(dataset, start, home)
    frame = pd.read_parquet(snap_dir)
    person = customer_persons(home, dataset.name, records)
    contacts = read_contacts(snap_dir)
    history = ContactHistory.from_frame(contacts, start) if contacts is not None else None
    window = feature_config(read_metadata(snap_dir.parent, start)).rfm_window_days
    out = out or home.batch(dataset.name) / "simulations" / f"{start}_{days}d_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    ids = frame["customer_id"].astype(str).to_numpy(dtype=object)
    store = None
    if url is None:
        log_path = out / "decisions.sqlite"
        for suffix in ("", "-wal", "-shm"):  # a rerun starts from an empty log
            Path(str(log_path) + suffix).unlink(missing_ok=True)
        store = SQLiteDecisionStore(log_path)
        cs, spend = score_frame(frame, champions, catalog, window_days=window, uplift=uplift)  # the batch's path
        versions = Versions(model_versions(champions, uplift), catalog.version, "simulation")
        decider = LocalDecider(cs, catalog=catalog, spend=spend, history=history, store=store, versions=versions,
                               key=f"simulation:{seed}:{start}")
    else:
        if not api_key:
            raise SimulationError("--url needs an API key: set CVM_API_KEYS (or --api-key)")
        decider = RemoteDecider(url, api_key, ids, catalog)
    try:
        table, truth = simulate(customer_ids=ids, decider=decider, catalog=catalog, person=person, response=response,
                                start=start, days=days, seed=seed, visit_rate=visit_rate, horizon_days=horizon_days,
                                progress=progress)
        decisions, outcomes = decider.log()
    finally:
        if store is not None:
            store.close()
    from scoring.impact import frames_from_log

    lo = cutoff(start)
    hi = lo + timedelta(days=days)
    dec, evs = frames_from_log(decisions, outcomes)
    report = measure_impact(dec, evs, start=lo, end=hi, horizon_days=horizon_days, min_customers=min_customers)
    measured = {}
    for key, true in truth.items():
        metric, pair = key.split(".")
        test, reference = pair.split("_vs_")
        lift = report.lift(reference, metric, test=test)
        iv = lift.absolute
        covered = (iv.low is not None and iv.high is not None and np.isfinite(true) and iv.low <= true <= iv.high)
        measured[key] = {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "method": iv.method,
                         "true": true, "covered": bool(covered), "verdict": lift.verdict}
    payload = {"dataset": dataset.name, "start": str(start), "days": days, "seed": seed, "visit_rate": visit_rate,
               "decided_by": url or "in process (scoring.live.decide_many)",
               "decisions": len(decisions), "customers": len(table),
               "arms": {str(a): int(v) for a, v in table["arm"].value_counts().sort_index().items()},
               "true_lift": truth, "measured": measured,
               "truth_definition": "mean over the policy arm's customers of P(convert | offers shown) - "
                                   "P(convert | no offer), from truth/response (batch/simulation.py)",
               "impact": report.to_dict()}
    write_text(out / "simulation.json", json.dumps(payload, indent=2, default=str))
    return SimulationResult(out, report, truth, measured, days, len(decisions), len(table))


def simulate_dataset(home: Home, dataset_spec: str, start: date, days: int, *, catalog_path: Path | None = None,
                     seed: int = 0, visit_rate: float = 0.1, out: Path | None = None,
                     progress: Callable[[int], None] | None = None, url: str | None = None,
                     api_key: str | None = None) -> SimulationResult:
    """``cvm simulate``: the dataset, the champions and the catalog resolved, then ``run_simulation``."""
    from scoring.catalog import default_catalog_path, load_catalog
    from scoring.champions import RegistrySource
    from sources.dataset import resolve_dataset

    dataset = resolve_dataset(dataset_spec, home)
    source = RegistrySource(home.mlflow_tracking_uri())
    champions = source.champions()
    catalog = load_catalog(catalog_path or default_catalog_path("synthetic"), categories_of(champions))
    uplift = source.uplift() if any(o.propensity == "uplift" for o in catalog.offers) else None
    return run_simulation(home, dataset, start, days, catalog=catalog, champions=champions, seed=seed,
                          visit_rate=visit_rate, out=out, progress=progress, url=url, api_key=api_key, uplift=uplift)
