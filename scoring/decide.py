"""From arbitration to decisions: the arm of each customer, what it is shown, its pscore.

Pure and vectorised, shared by the service (one customer per call, inside the decision
log's lock), the nightly batch (millions) and the simulation. Given the offer engine's
result (``scoring.nbo.arbitrate``) and the decision time:

* every customer gets an arm (``scoring.arms.assign``);
* ``policy``: the offers ranked by expected value, the best shown first;
* ``exploration``: a uniformly random eligible offer first, then the policy's ranking of
  the others;
* ``control``: nothing is shown; the policy's ranking is still computed and its first offer
  kept as ``policy_offer_id`` (what the customer would have got, for measuring lift);
* the pscore of the first offer (``scoring.arms.pscores``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np

from scoring.arms import CONTROL, EXPLORATION, assign, explore_index, pscores
from scoring.catalog import Catalog
from scoring.nbo import ranking


@dataclass
class Choice:
    """Per customer (arrays of length n; offer indices into ``catalog.offers``, -1 for none)."""

    arm: np.ndarray
    n_eligible: np.ndarray
    policy_top: np.ndarray
    first: np.ndarray
    pscore: np.ndarray
    order: np.ndarray  # n x offers: the ranking the decision records, first offer first

    @property
    def shows(self) -> np.ndarray:
        """True where the customer is shown an offer."""
        return self.first >= 0


def choose(customer_ids: Sequence[str], catalog: Catalog, result: Mapping[str, np.ndarray],
           when: date | datetime) -> Choice:
    """Arms, first offers and pscores for a decision at ``when``."""
    eligible = np.asarray(result["eligible"], dtype=bool)
    n, m = eligible.shape
    order = ranking(result)
    n_el = eligible.sum(axis=1).astype("int64")
    top = np.where(n_el > 0, order[:, 0] if m else -1, -1)
    arms, v = assign(customer_ids, catalog.experiment, when)
    # the exploration pick: the i-th eligible offer in catalog order
    idx = explore_index(v, n_el)
    running = np.cumsum(eligible, axis=1)
    pick = np.argmax(eligible & (running == (idx + 1)[:, None]), axis=1) if m else np.zeros(n, dtype="int64")
    first = np.where(n_el == 0, -1, np.where(arms == CONTROL, -1, np.where(arms == EXPLORATION, pick, top)))
    rows = np.flatnonzero((arms == EXPLORATION) & (n_el > 0))
    if len(rows):  # the pick first, then the policy's ranking of the rest
        sub = order[rows]
        rest = sub[sub != pick[rows][:, None]].reshape(len(rows), m - 1)
        order = order.copy()
        order[rows] = np.concatenate([pick[rows][:, None], rest], axis=1)
    shown_first = np.where(first >= 0, first, top)
    ps = pscores(arms, n_el, shown_first == top, catalog.experiment)
    return Choice(arms, n_el, top.astype("int64"), first.astype("int64"), ps, order)


def ranked(catalog: Catalog, result: Mapping[str, np.ndarray], choice: Choice, i: int, *, k: int,
           channel: str | None = None) -> list[dict]:
    """Customer ``i``'s ranked eligible offers as the decision records them (at most ``k``)."""
    out = []
    for j in choice.order[i, :k]:
        if not result["eligible"][i, j]:
            break
        offer = catalog.offers[int(j)]
        out.append({"offer_id": offer.id, "rank": len(out) + 1, "channel": channel or offer.channels[0],
                    "expected_value": round(float(result["expected_value"][i, j]), 6)})
    return out


#: the decision columns the batch adds to each offer row it writes
OFFER_DECISION_COLUMNS = ("decision_id", "arm", "pscore")


def batch_decision_ids(customer_ids: Sequence[str], run_key: str) -> np.ndarray:
    """Deterministic decision ids of one batch run (uuid5 of the run and the customer), so
    a Spark executor and the driver name a decision alike without talking to each other."""
    import uuid

    space = uuid.uuid5(uuid.NAMESPACE_URL, f"cvm-batch:{run_key}")
    return np.asarray([uuid.uuid5(space, str(c)).hex for c in customer_ids], dtype=object)


def decision_table(customer_ids: Sequence[str], catalog: Catalog, result: Mapping[str, np.ndarray], c: Choice, *,
                   k: int, decided_us: int, decision_ids: np.ndarray, versions: tuple[dict, str, str],
                   source: str = "batch") -> dict[str, np.ndarray | list]:
    """One decision log row per customer (``scoring.decisions.records.DECISION_COLUMNS``),
    as column arrays: the batch's answer, logged in bulk."""
    import json

    n = len(customer_ids)
    ids = np.asarray([o.id for o in catalog.offers] + [None], dtype=object)
    channels = np.asarray([o.channels[0] for o in catalog.offers] + [None], dtype=object)
    eligible, ev = result["eligible"], result["expected_value"]
    top_k = c.order[:, :k]
    ok = np.take_along_axis(eligible, top_k, axis=1)
    values = np.round(np.take_along_axis(ev, top_k, axis=1), 6)
    offers = []
    for i in range(n):
        row = [{"offer_id": ids[j], "rank": r + 1, "channel": channels[j], "expected_value": float(v)}
               for r, (j, good, v) in enumerate(zip(top_k[i], ok[i], values[i], strict=True)) if good]
        offers.append(json.dumps(row, separators=(",", ":")))
    models, catalog_version, snapshot_version = versions
    return {
        "decision_id": decision_ids, "customer_id": np.asarray(customer_ids, dtype=object),
        "decided_us": np.full(n, decided_us, dtype="int64"), "arm": c.arm,
        "offer_id": ids[c.first], "channel": channels[c.first], "pscore": c.pscore,
        "policy_offer_id": ids[c.policy_top], "offers": offers,
        "model_versions": [json.dumps(models, separators=(",", ":"))] * n,
        "catalog_version": [catalog_version] * n, "snapshot_version": [snapshot_version] * n,
        "source": [source] * n, "released": np.zeros(n, dtype="int64"),
    }
