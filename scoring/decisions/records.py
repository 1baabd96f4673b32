"""What the decision log holds: decisions, outcomes, and the errors of its API.

A decision is one answer of the offer engine for one customer (a ``/recommend`` call, one
customer of the nightly batch, one simulated day): the ranked offers, the one presented
first with its channel, the arm and pscore (``scoring.arms``), the versions it was made
with. Outcomes are what happened after: ``impression``, ``click``, ``accept``, ``reject``,
``convert`` (with an optional value), and ``not_shown``: the caller never showed the
decision, so it stops counting as a contact (caps and cooldowns release it).

Times are UTC. The log stores them as integer microseconds since the Unix epoch
(``decided_us``, ``occurred_us``): exact, compact, and compared the same way on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from base.dates import from_us, to_us  # noqa: F401 (the log's time unit, re-exported for its users)

OUTCOME_TYPES = ("impression", "click", "accept", "reject", "convert", "not_shown")
OutcomeKind = Literal["impression", "click", "accept", "reject", "convert", "not_shown"]
#: most outcomes one call may record
MAX_OUTCOMES = 1000

#: columns of the decisions table, in order
DECISION_COLUMNS = ("decision_id", "customer_id", "decided_us", "arm", "offer_id", "channel", "pscore",
                    "policy_offer_id", "offers", "model_versions", "catalog_version", "snapshot_version", "source",
                    "released")
OUTCOME_COLUMNS = ("outcome_id", "decision_id", "customer_id", "offer_id", "type", "occurred_us", "value",
                   "received_us")


class DecisionStoreUnavailable(RuntimeError):
    """The log cannot be reached or written: nothing may be decided (the service answers 503)."""


class OutcomeError(ValueError):
    """A batch of outcomes was refused as a whole; the message names the field or the ids."""


def new_decision_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Decision:
    customer_id: str
    decided_us: int
    arm: str
    offer_id: str | None  # presented first (None: control, or nothing eligible)
    channel: str | None
    pscore: float
    policy_offer_id: str | None  # the policy's own first choice (what control would have got)
    offers: list[dict] = field(default_factory=list)  # ranked: offer_id, rank, expected_value, channel
    model_versions: dict[str, str] = field(default_factory=dict)
    catalog_version: str = ""
    snapshot_version: str = ""
    source: str = "api"
    decision_id: str = field(default_factory=new_decision_id)
    released: bool = False

    def row(self) -> tuple:
        return (self.decision_id, self.customer_id, self.decided_us, self.arm, self.offer_id, self.channel,
                float(self.pscore), self.policy_offer_id, json.dumps(self.offers, separators=(",", ":")),
                json.dumps(self.model_versions, separators=(",", ":")), self.catalog_version,
                self.snapshot_version, self.source, int(self.released))


class Outcome(BaseModel):
    """One outcome event; ``outcome_id`` is the caller's idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    decision_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    type: OutcomeKind
    timestamp: datetime
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)


@dataclass(frozen=True)
class OutcomeCounts:
    """What one batch did: ``received`` = ``written`` + ``duplicates``."""

    received: int
    written: int
    duplicates: int
    released: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"received": self.received, "written": self.written, "duplicates": self.duplicates,
                "released": self.released}


@dataclass
class LiveHistory:
    """One customer's logged contacts and outcomes since a time (what the policy counts)."""

    contacts: list[tuple[str, int]]  # (offer_id, decided_us) of decisions that presented an offer
    outcomes: list[tuple[str, str, int]]  # (offer_id, type, occurred_us)
