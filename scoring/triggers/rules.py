"""Trigger rules: "when X, and not Y within T, decide an offer and send it", declared in YAML.

    webhook:
      url: http://crm.example/cvm-hook
      secret_env: CVM_WEBHOOK_SECRET     # the HMAC key is read from this variable, never the file
    triggers:
      - name: abandoned_cart
        when: {event: add_to_cart}
        unless: {event: purchase, within_minutes: 15}
        channel: email

``when`` is one of:

* ``{event: TYPE}``, optionally ``category: C`` (the event's ``category`` property): the
  timer starts at the event's time;
* ``{segment_entry: NAME}``: the customer enters a real-time segment;
* ``{score: NAME, above: X}`` or ``{score: NAME, below: X}``: the customer's fresh score
  crosses the threshold (from the other side: a customer already above does not fire again).

``unless: {event: TYPE, within_minutes: T}`` cancels the trigger when the customer has an
event of that type in [X's time, X's time + T), in event time: a purchase that arrives late
or out of order still cancels. Without ``unless``, ``delay_minutes`` (default 0) waits
before firing. A fired trigger makes one next-best-offer decision (``channel`` and ``k``
as for /recommend), logged with source ``trigger:<name>`` under the contact policy and
the control groups.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_EVENT_TYPE = r"^[a-z][a-z0-9_]{0,39}$"  # as sources.event_log.records


class TriggerConfigError(ValueError):
    """A trigger file that cannot be used; the message names the trigger and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnEvent(_Strict):
    event: str = Field(pattern=_EVENT_TYPE, description="The event type that starts the trigger.")
    category: str | None = Field(None, description="Only events whose `category` property is this.")


class OnSegmentEntry(_Strict):
    segment_entry: str = Field(min_length=1, description="A real-time segment the customer enters.")


class OnScore(_Strict):
    score: Literal["churn_probability", "next_purchase_probability", "expected_orders", "clv"] = Field(
        description="A score of /score, computed on the fresh vector.")
    above: float | None = Field(None, description="Fire when the score rises to or above this.")
    below: float | None = Field(None, description="Fire when the score falls below this.")

    @model_validator(mode="after")
    def _one_side(self) -> OnScore:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        return self


class Unless(_Strict):
    event: str = Field(pattern=_EVENT_TYPE, description="The event type that cancels the trigger.")
    within_minutes: float = Field(gt=0, le=60 * 24 * 90, description="How long after X it may arrive.")


class Trigger(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    when: OnEvent | OnSegmentEntry | OnScore
    unless: Unless | None = None
    delay_minutes: float = Field(0, ge=0, le=60 * 24 * 90, description="Without `unless`: wait before firing.")
    channel: str | None = Field(None, description="Decide for this channel only (as /recommend's channel).")
    k: int = Field(3, ge=1, le=20, description="Offers ranked in the decision.")
    enabled: bool = True

    @model_validator(mode="after")
    def _wait(self) -> Trigger:
        if self.unless is not None and self.delay_minutes:
            raise ValueError("delay_minutes and unless exclude each other: the wait is unless.within_minutes")
        return self

    @property
    def wait_us(self) -> int:
        minutes = self.unless.within_minutes if self.unless is not None else self.delay_minutes
        return round(minutes * 60_000_000)


class Webhook(_Strict):
    url: str = Field(pattern=r"^https?://", description="Where fired decisions are POSTed.")
    secret_env: str = Field("CVM_WEBHOOK_SECRET", pattern=r"^[A-Z_][A-Z0-9_]*$",
                            description="Environment variable holding the HMAC-SHA256 key.")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(50, ge=1, le=10_000, description="Then the delivery is marked failed.")
    backoff_seconds: float = Field(1.0, gt=0, description="First retry delay; doubles per attempt.")
    max_backoff_seconds: float = Field(10.0, gt=0, description="Longest wait between attempts.")


class TriggerFile(_Strict):
    webhook: Webhook | None = Field(None, description="Without one, fired decisions stay in the outbox.")
    triggers: list[Trigger] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TriggerFile:
        names = [t.name for t in self.triggers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"trigger names must be unique: {', '.join(dupes)}")
        return self


def _where(loc: tuple, data: object) -> str:
    """``trigger 'abandoned_cart': unless.within_minutes`` from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "triggers" and isinstance(loc[1], int):
        items = data.get("triggers") if isinstance(data, dict) else None
        name = None
        if isinstance(items, list) and loc[1] < len(items) and isinstance(items[loc[1]], dict):
            name = items[loc[1]].get("name")
        head = f"trigger {name!r}" if name else f"triggers[{loc[1]}]"
        rest = [str(p) for p in loc[2:] if not re.fullmatch(r"On\w+|Unless|Trigger", str(p))]
        return f"{head}: {'.'.join(rest) or '(the trigger)'}"
    return ".".join(str(p) for p in loc) or "(the file)"


def parse_triggers(data: object, source: str = "triggers") -> TriggerFile:
    """The checked trigger file; ``TriggerConfigError`` naming each bad trigger and field."""
    try:
        return TriggerFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_where(tuple(e['loc']), data)}: {e['msg']}" for e in exc.errors()]
        raise TriggerConfigError(f"{source}: " + "; ".join(lines)) from None


def check_secret(config: TriggerFile, env) -> str | None:
    """The webhook's HMAC key from ``env`` (None without a webhook); ``TriggerConfigError`` when unset."""
    if config.webhook is None:
        return None
    secret = env.get(config.webhook.secret_env)
    if not secret:
        raise TriggerConfigError(f"webhook {config.webhook.url}: set {config.webhook.secret_env} to the HMAC key "
                                 "shared with the receiver (it is never read from the file)")
    return secret


def load_triggers(path: Path) -> TriggerFile:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TriggerConfigError(f"{path}: {exc}") from None
    return parse_triggers(data, str(path))
