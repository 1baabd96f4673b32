"""What the event log holds, and the checks an event passes before it is accepted.

An event is one thing a customer did, posted by a tracking system (``POST /events``,
``cvm events ingest``): an ``event_id`` (the idempotency key: a replay of the same id is a
duplicate, never a second event), who did it (``customer_id``, or an ``identifier`` known
to identity resolution: email, phone, cookie, device, loyalty card), its ``type`` (view,
add_to_cart, purchase, email_open, ...), when (``timestamp``, UTC) and ``properties``
(``amount``, ``order_id``, ``category``, ...). A ``purchase`` carries its ``order_id`` and a
finite ``amount``: it is a transaction line of the nightly batch.

A batch is checked as a whole (``check_batch``): the first bad event refuses the batch with
an ``EventError`` naming its position, its ``event_id`` and the field, and nothing of the
batch is written. Limits (``EventLimits``): at most ``MAX_EVENTS`` per batch, properties of
at most ``max_properties_bytes`` as JSON, timestamps at most ``max_future_skew_seconds``
ahead of the receiver's clock. Times are stored as integer microseconds since the epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

#: most events one call may post
MAX_EVENTS = 1000
#: identifier types an event may name its customer by (identity resolution's personal ones)
IDENTIFIER_TYPES = ("email", "phone", "cookie", "device", "loyalty_card", "crm_id")
#: columns of the event log, in order
EVENT_COLUMNS = ("event_id", "customer_id", "identifier_type", "identifier_value", "event_type", "occurred_us",
                 "properties", "received_us")

Id = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class EventError(ValueError):
    """A batch of events was refused as a whole; the message names the event and the field."""


@dataclass(frozen=True)
class EventLimits:
    """What an accepted event may be."""

    max_properties_bytes: int = 16_384
    max_future_skew_seconds: float = 300.0


class Identifier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["email", "phone", "cookie", "device", "loyalty_card", "crm_id"]
    value: Annotated[str, StringConstraints(min_length=1, max_length=320)]


class Event(BaseModel):
    """One posted event, as the API takes it."""

    model_config = ConfigDict(extra="forbid")

    event_id: Id = Field(description="Idempotency key: the same id posted again is a duplicate.")
    customer_id: Id | None = Field(None, description="The golden customer id (or give identifier).")
    identifier: Identifier | None = Field(None, description="An identifier known to identity resolution.")
    type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")] = Field(
        description="view, add_to_cart, purchase, email_open, ... (lower case, digits and _)")
    timestamp: datetime = Field(description="When it happened; a time zone is required (UTC is stored).")
    properties: dict[str, str | float | int | bool | None] = Field(default_factory=dict, description=(
        "amount, order_id, category, ...: flat scalars; a purchase needs order_id and amount."))

    @model_validator(mode="after")
    def _who_and_what(self) -> Event:
        if (self.customer_id is None) == (self.identifier is None):
            raise ValueError("customer_id, identifier: give exactly one of them")
        if self.timestamp.tzinfo is None:
            raise ValueError("timestamp: a time zone is required (for example 2025-07-01T10:00:00Z)")
        if self.type == "purchase":
            amount = self.properties.get("amount")
            if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
                raise ValueError("properties.amount: a purchase needs a finite number")
            if not isinstance(self.properties.get("order_id"), str) or not self.properties["order_id"]:
                raise ValueError("properties.order_id: a purchase needs its order id (a string)")
        return self


def _where(i: int, raw: object) -> str:
    eid = raw.get("event_id") if isinstance(raw, Mapping) else None
    return f"events[{i}]" + (f" (event_id {str(eid)[:80]!r})" if eid is not None else "")


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    field = ".".join(str(p) for p in e.get("loc", ()) if p != "__root__")
    msg = e.get("msg", "invalid").removeprefix("Value error, ")
    return f"{field}: {msg}" if field else msg  # a whole-event rule names its field itself


def check_batch(raw: Sequence[object], *, now: datetime, limits: EventLimits = EventLimits()) -> list[Event]:
    """Every event of ``raw`` checked, or ``EventError`` for the first bad one (nothing accepted)."""
    if not raw:
        raise EventError("events: the batch is empty")
    if len(raw) > MAX_EVENTS:
        raise EventError(f"events: {len(raw):,} events in one batch, at most {MAX_EVENTS:,}")
    out = []
    for i, item in enumerate(raw):
        try:
            event = item if isinstance(item, Event) else Event.model_validate(item)
        except ValidationError as exc:
            raise EventError(f"{_where(i, item)}: {_first_error(exc)}; nothing of this batch was written") from None
        size = len(json.dumps(event.properties, separators=(",", ":")))
        if size > limits.max_properties_bytes:
            raise EventError(f"{_where(i, item)}: properties: {size:,} bytes as JSON, at most "
                             f"{limits.max_properties_bytes:,}; nothing of this batch was written")
        ahead = (event.timestamp - now).total_seconds()
        if ahead > limits.max_future_skew_seconds:
            raise EventError(f"{_where(i, item)}: timestamp: {ahead:,.0f} s ahead of the receiver's clock, at most "
                             f"{limits.max_future_skew_seconds:,.0f}; nothing of this batch was written")
        out.append(event)
    return out

