"""The scoring and next-best-offer service (BentoML 1.4).

Start it with ``cvm serve`` (or ``bentoml serve serving.service:CVMService`` with the
``CVM_*`` variables of ``serving.settings``). Endpoints, all JSON, documented at ``/``:

* ``POST /score`` ``{"customer_ids": [...], "reasons": true}``: churn, next-purchase,
  CLV, top cross-sell categories and reason codes per customer;
* ``POST /recommend`` ``{"customer_id": ..., "k": 3, "channel": ..., "exclude_offer_ids": [...]}``:
  a decision, logged before it is answered (``decision_id``, ``arm``, ``pscore``);
* ``POST /outcomes`` ``{"outcomes": [...]}``: impressions, clicks, accepts, rejects,
  conversions (and ``not_shown``) of logged decisions, idempotent by ``outcome_id``;
* ``POST /events`` ``{"events": [...]}``: up to 1,000 behavioural events (view, add_to_cart,
  purchase, ...), idempotent by ``event_id``, the customer named by ``customer_id`` or by an
  ``identifier`` resolved to its golden record; durable in the event log before the answer;
* ``POST /admin/reload``: check the registry and the snapshot now (admin key);
* ``/readyz`` (false until champions and snapshot are loaded), ``/livez``, ``/healthz``,
  ``/metrics`` (Prometheus) from BentoML.

Importing this module configures nothing: settings are read and models loaded when the
server creates the service instance.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import ServiceUnavailable
from pydantic import BaseModel, Field, StringConstraints
from starlette.responses import Response

from base.home import Home
from features.online_store import OnlineStoreError
from scoring.champions import NotReadyError
from scoring.decisions import (
    MAX_OUTCOMES,
    OUTCOME_TYPES,
    DecisionStoreUnavailable,
    GroupCommitter,
    OutcomeError,
    open_decision_store,
    to_us,
)
from scoring.decisions import Outcome as OutcomeEvent
from scoring.live import PolicyUnavailable
from serving import engine
from serving.http import REQUEST_ID, GuardMiddleware, RequestIdFilter
from serving.settings import SERVICE_NAME, ServiceSettings
from sources.event_log.records import MAX_EVENTS
from sources.event_log.redis_log import EventLogUnavailable

log = logging.getLogger("cvm.serving")

MAX_IDS = 1000
#: how often the identifier index of POST /events is re-read
LOOKUP_SECONDS = 60.0
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=False)]


# ---------------------------------------------------------------------------- response schema

def _nullable(schema: dict) -> None:
    """OpenAPI 3.0 spelling of an optional field: BentoML keeps only the first ``anyOf``
    branch when it builds the document, which would drop ``null``."""
    schema["nullable"] = True


def _any_nullable(schema: dict) -> None:
    """A number, a string or null: no single OpenAPI 3.0 type, so no type at all."""
    schema.pop("anyOf", None)
    schema["nullable"] = True


class Reason(BaseModel):
    feature: str = Field(description="Model input that moved the score.")
    value: float | str | None = Field(description="The customer's value of that input (null: missing).",
                                      json_schema_extra=_any_nullable)
    effect: str = Field(description="'up' or 'down': the direction it pushed the score.")
    contribution: float = Field(description="TreeSHAP contribution on the model's raw scale.")


class CategoryScore(BaseModel):
    category: str
    probability: float = Field(ge=0, le=1)


class Freshness(BaseModel):
    source: str = Field(description="'events': the snapshot brought up to the customer's events since it "
                        "(features.fresh); 'snapshot': the nightly snapshot as published.")
    snapshot_as_of: str = Field(description="The published snapshot's as_of.")
    vector_as_of: str = Field(description="The date the vector describes: the next morning once events are applied.")
    events_applied: int = Field(ge=0, description="Events of the snapshot's day applied to the vector.")
    last_event_at: str | None = Field(description="Time of the latest applied event (UTC).",
                                      json_schema_extra=_nullable)


class CustomerResult(BaseModel):
    customer_id: str
    found: bool = Field(description="False: unknown to the snapshot; the scores are population priors.")
    rfm_segment: str | None = Field(json_schema_extra=_nullable)
    churn_probability: float | None = Field(json_schema_extra=_nullable)
    next_purchase_probability: float | None = Field(json_schema_extra=_nullable)
    expected_orders: float | None = Field(json_schema_extra=_nullable)
    clv: float | None = Field(json_schema_extra=_nullable)
    cross_sell: list[CategoryScore] = Field(description="Top categories the customer does not buy yet.")
    reasons: dict[str, list[Reason]] = Field(description="Per score (churn, next_purchase, clv): top features.")
    as_of: str = Field(description="Snapshot date the features describe.")
    freshness: Freshness = Field(description="How fresh the feature vector scored is.")
    cold_start: str | None = Field(None, json_schema_extra=_nullable)


class ScoreResponse(BaseModel):
    request_id: str
    as_of: str
    snapshot_version: str
    model_versions: dict[str, str] = Field(description="Registered version of each champion used.")
    results: list[CustomerResult]


class Offer(BaseModel):
    offer_id: str
    name: str
    type: str
    channel: str
    expected_value: float = Field(description="basis x value x lever - cost, the basis being the propensity "
                                  "or, for an offer with 'propensity: uplift', the uplift")
    propensity: float
    value: float
    basis: str = Field(description="What expected value multiplies: 'model' (the propensity) or 'uplift'.")
    uplift: float | None = Field(description="P(convert | contacted) - P(convert | not contacted) from the "
                                 "cvm-uplift champion; null without one for this offer.",
                                 json_schema_extra=_nullable)
    uplift_interval: list[float] | None = Field(
        description="95 % interval [low, high] of the uplift; null without an uplift estimate.",
        json_schema_extra=_nullable)
    reasons: list[str]


class RecommendResponse(BaseModel):
    request_id: str
    customer_id: str
    found: bool
    rfm_segment: str | None = Field(json_schema_extra=_nullable)
    decision_id: str = Field(description="The logged decision: report its outcomes to POST /outcomes.")
    arm: str = Field(description="'policy', 'exploration' (a random eligible offer) or 'control' (no offer).")
    pscore: float = Field(ge=0, le=1, description="Probability that the logging policy shows this first offer "
                          "(or, for control, no offer) to this customer.")
    offers: list[Offer]
    as_of: str
    freshness: Freshness = Field(description="How fresh the feature vector decided on is.")
    model_versions: dict[str, str]
    cold_start: str | None = Field(None, json_schema_extra=_nullable)
    control_group: str | None = Field(None, description="Set when the customer is held out this period.",
                                      json_schema_extra=_nullable)
    no_offer_reasons: dict[str, str] | None = Field(
        None, description="When no offer qualifies: why each offer was left out.", json_schema_extra=_nullable)


class OutcomesResponse(BaseModel):
    request_id: str
    received: int = Field(description="Outcomes in the request.")
    written: int = Field(description="Newly recorded.")
    duplicates: int = Field(description="Ignored: their outcome_id was already recorded.")
    released: int = Field(description="Decisions released by a not_shown outcome (no longer count as contacts).")


class EventsResponse(BaseModel):
    request_id: str
    received: int = Field(description="Events in the request.")
    written: int = Field(description="Newly recorded (durable before this answer).")
    duplicates: int = Field(description="Ignored: their event_id was already recorded.")


class ReloadResponse(BaseModel):
    changed: bool
    model_versions: dict[str, str]
    snapshot_version: str
    message: str
    failures: list[str]


# ---------------------------------------------------------------------------- metrics
_METRICS: dict[str, object] = {}


def _metric(name: str):
    """Prometheus metrics, created once per process on first use."""
    if not _METRICS:
        _METRICS["load_failures"] = bentoml.metrics.Counter(
            name="cvm_model_load_failures_total", documentation="Champion versions rejected at load",
            labelnames=["task"])
        _METRICS["reloads"] = bentoml.metrics.Counter(
            name="cvm_state_reloads_total", documentation="Model or snapshot swaps since start")
        _METRICS["customers"] = bentoml.metrics.Counter(
            name="cvm_customers_scored_total", documentation="Customers scored", labelnames=["found"])
        _METRICS["decisions"] = bentoml.metrics.Counter(
            name="cvm_decisions_total", documentation="Decisions logged", labelnames=["arm"])
        _METRICS["events"] = bentoml.metrics.Counter(
            name="cvm_events_total", documentation="Events received", labelnames=["result"])
        _METRICS["outcomes"] = bentoml.metrics.Counter(
            name="cvm_outcomes_total", documentation="Outcomes received", labelnames=["result"])
        _METRICS["unavailable"] = bentoml.metrics.Counter(
            name="cvm_decisions_refused_total", documentation="Recommendations refused (503): log or policy "
            "unavailable", labelnames=["reason"])
    return _METRICS[name]


def _json(body: dict, state: engine.ServingState | None = None, status: int = 200) -> Response:
    """The answer as JSON bytes. The API methods return this rather than a pydantic model
    (the annotations document the schema): building a model per result of a 1,000-id
    answer would cost more than scoring it."""
    headers = {"X-Model-Versions": state.version_header()} if state is not None else None
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), status_code=status,
                    media_type="application/json", headers=headers)


#: requests for at most this many customers are computed on the event loop itself
INLINE_IDS = 32


async def _compute(n: int, fn, *args, **kwargs):
    """Small requests (a few ms of numpy) run inline on the event loop: handing them to a
    thread costs more than the work, and threads contending for the GIL wait up to its
    5 ms switch interval, which shows in p99. Big ones go to a worker thread so that they
    do not hold up the small ones queued behind them."""
    if n <= INLINE_IDS:
        return fn(*args, **kwargs)
    import functools

    import anyio

    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _client_error(message: str, status: int = 400) -> Response:
    return _json({"error": message, "request_id": REQUEST_ID.get()}, status=status)


def _unavailable(message: str) -> Response:
    """503 with the reason and Retry-After: nothing was decided."""
    body = {"error": message, "request_id": REQUEST_ID.get()}
    return Response(json.dumps(body), status_code=503, media_type="application/json", headers={"Retry-After": "5"})


class RedactInputFilter(logging.Filter):
    """Keeps request content out of the logs. BentoML logs a body that fails the API's
    validation (logger ``bentoml._internal.server.http_app``: ``Exception on /score [POST]``)
    with the pydantic ``ValidationError``'s traceback, and pydantic's text quotes the input,
    truncated (``input_value=['jane.doe@example.com', ...``): customer ids. Such a record keeps
    its message, followed by the errors' locations, messages and types instead of the
    traceback (BentoML's parsing code, the same every time); in any other record (a
    validation error elsewhere, chained, or in a message) each ``input_value=...`` is masked."""

    MASK = "input_value=<redacted>"
    #: BentoML functions that validate a request body (_bentoml_sdk.io_models, _bentoml_impl.serde)
    PARSERS = frozenset({"from_http_request", "parse_request", "deserialize_model"})

    def filter(self, record: logging.LogRecord) -> bool:
        if self._request_validation(record.exc_info):
            error = record.exc_info[1]
            record.msg, record.args = f"{self._message(record)}: {self._summary(error)}", None
            record.exc_info, record.exc_text = None, None
            return True
        message = self._message(record)
        if "input_value=" in message:
            record.msg, record.args = self._mask(message), None
        if record.exc_info and record.exc_text is None:
            text = logging.Formatter().formatException(record.exc_info)
            if "input_value=" in text:
                record.exc_info, record.exc_text = None, self._mask(text)
        elif record.exc_text and "input_value=" in record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        return True

    @classmethod
    def _request_validation(cls, exc_info) -> bool:
        """Is the record's exception a pydantic error raised while BentoML parsed a request?"""
        from pydantic_core import ValidationError

        if not exc_info or not isinstance(exc_info[1], ValidationError):
            return False
        tb = exc_info[1].__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_name in cls.PARSERS:
                return True
            tb = tb.tb_next
        return False

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        try:
            return record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments do not fit its format
            return str(record.msg)

    @classmethod
    def _mask(cls, text: str) -> str:
        import re

        # up to the line's last ", input_type=" (the value itself may hold that text), else to its end
        return re.sub(r"input_value=(?:[^\n]*(?=, input_type=)|[^\n]*)", cls.MASK, text)

    @staticmethod
    def _summary(error) -> str:
        """``1 validation error for Input: reasons: Input should be a valid boolean [bool_parsing]``,
        without inputs; an unexpected field's name (the caller's text) is not shown either."""
        shown = []
        for e in error.errors(include_url=False, include_context=False, include_input=False):
            loc = [str(p) for p in e.get("loc", ())]
            if e.get("type") == "extra_forbidden" and loc:
                loc[-1] = "(unexpected field)"
            shown.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', '')} [{e.get('type', '')}]")
        n = error.error_count()
        more = f" (and {n - 3} more)" if n > 3 else ""
        return f"{n} validation error{'s' if n != 1 else ''} for {error.title}: {'; '.join(shown[:3])}{more}"


def _setup_logging() -> None:
    # BentoML's validation errors quote request bodies: masked on the logger that writes them
    # and on every handler BentoML's and the root logger write through
    redact = RedactInputFilter()
    for target in (logging.getLogger("bentoml._internal.server.http_app"), *logging.getLogger("bentoml").handlers,
                   *logging.getLogger().handlers):
        if not any(isinstance(f, RedactInputFilter) for f in target.filters):
            target.addFilter(redact)
    root = logging.getLogger("cvm")
    if any(isinstance(f, RequestIdFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] "
                                           "%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def _in_bento() -> bool:
    return bentoml.server_context.bento_version not in ("", "not available", None)


def _settings() -> ServiceSettings:
    return ServiceSettings.from_env(in_bento=_in_bento())


@bentoml.service(
    name=SERVICE_NAME,  # workers: BentoML's own setting (cvm serve --workers -> BENTOML_CONFIG_OVERRIDES)
    traffic={"timeout": 30, "max_concurrency": 256},
    # GuardMiddleware writes the access log (with the request id). BentoML's OpenTelemetry
    # spans are skipped on the API routes: even unsampled, they pile up in the heap and make
    # every full garbage collection slower (measured: pauses growing past 100 ms).
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/score", "/recommend", "/outcomes", "/events", "/admin/reload"]},
    labels={"project": "cvm"},
)
class CVMService:
    """Customer scores and next-best offers for other systems."""

    def __init__(self) -> None:
        from serving.state import StateHolder

        _setup_logging()
        self.settings = _settings()
        if self.settings.no_auth:
            log.warning("!!! AUTHENTICATION IS OFF (CVM_NO_AUTH=1): anyone who can reach this port can read "
                        "customer scores. Use this for local development only. !!!")
        self.holder = StateHolder(
            self.settings,
            on_failure=lambda task: _metric("load_failures").labels(task=task).inc(),
            on_reload=lambda: _metric("reloads").inc())
        self.holder.start()
        self.decisions = open_decision_store(self.settings.decisions_url, Home(self.settings.home),
                                             self.holder.dataset_name())
        self.committer = GroupCommitter(self.decisions)
        from sources.event_log.open import open_event_log

        home = Home(self.settings.home)
        home.events(self.holder.dataset_name(), ensure=True)
        self.event_log = open_event_log(home, self.holder.dataset_name())  # SQLite, or Redis with CVM_REDIS_URL
        if hasattr(self.event_log, "durability"):
            log.warning("event log on Redis: %s", self.event_log.durability())
        self._profiles_root = home.profiles(self.holder.dataset_name())
        self._lookup, self._lookup_checked = None, 0.0
        from serving.triggers import start_triggers

        self.triggers = start_triggers(self.settings, self.holder, self.decisions)

    def _identifiers(self):
        """The latest identity resolution's identifier index, re-read at most once a minute."""
        from profiles.events import latest_lookup

        now = time.monotonic()
        if self._lookup is None or now - self._lookup_checked > LOOKUP_SECONDS:
            self._lookup, self._lookup_checked = latest_lookup(self._profiles_root), now
        return self._lookup

    def __is_ready__(self) -> bool:
        return self.holder.state is not None

    def _not_ready(self) -> Response:
        """503 with the reason (BentoML would hide it behind a generic message) and Retry-After."""
        reason = self.holder.last_error or "loading the champions and the snapshot"
        body = {"error": f"not ready: {reason}", "request_id": REQUEST_ID.get()}
        return Response(json.dumps(body), status_code=503, media_type="application/json",
                        headers={"Retry-After": "5"})

    @bentoml.api(route="/score")
    async def score(
        self,
        customer_ids: Annotated[list[CustomerId], Field(min_length=1, max_length=MAX_IDS,
                                                        description=f"1 to {MAX_IDS} customer ids (strings).")],
        reasons: Annotated[bool, Field(description="Add reason codes (TreeSHAP); false is faster for big batches.")]
        = True,
    ) -> ScoreResponse:
        """Churn, next-purchase and CLV scores, the top cross-sell categories and reason codes
        for each customer, in request order. Unknown customers get ``found: false`` and the
        snapshot's population priors. The model versions and snapshot are in the response
        and in the ``X-Model-Versions`` header."""
        t0 = time.perf_counter()
        state = self.holder.state
        if state is None:
            return self._not_ready()
        try:
            results = await _compute(len(customer_ids), engine.score, state, customer_ids, reasons=reasons)
        except (OnlineStoreError, EventLogUnavailable) as exc:  # Redis down: say so; the next request reconnects
            _metric("unavailable").labels(reason="online_store").inc()
            log.error("score refused: %s", exc)
            return _unavailable(str(exc))
        found = sum(r["found"] for r in results)
        _metric("customers").labels(found="true").inc(found)
        _metric("customers").labels(found="false").inc(len(results) - found)
        log.debug("score n=%d found=%d reasons=%s %.1f ms", len(results), found, reasons,
                  (time.perf_counter() - t0) * 1e3)
        return _json({"request_id": REQUEST_ID.get(), "as_of": state.as_of.isoformat(),
                      "snapshot_version": state.snapshot_version, "model_versions": state.model_versions,
                      "results": results}, state)

    @bentoml.api(route="/recommend")
    async def recommend(
        self,
        customer_id: CustomerId,
        k: Annotated[int, Field(ge=1, le=20, description="How many offers at most.")] = 3,
        channel: Annotated[str | None, Field(max_length=64, description="Only offers for this channel.")] = None,
        exclude_offer_ids: Annotated[list[Annotated[str, StringConstraints(max_length=64)]],
                                     Field(max_length=100, description="Offers not to make.")] = [],  # noqa: B006
        at: Annotated[datetime | None, Field(description="The decision's time: only on a server started with "
                                             "--simulation-clock (cvm simulate --url); default now.")] = None,
    ) -> RecommendResponse:
        """The ``k`` best offers for a customer, ranked by expected value (propensity x value x
        lever - cost), after eligibility, cooldowns and contact caps, with reasons. A service
        started without an offer catalog answers 404 saying how to add one (``/score`` works)."""
        t0 = time.perf_counter()
        state = self.holder.state
        if state is None:
            return self._not_ready()
        if state.catalog is None:  # 404: the service has no offers to recommend (RFC 9110 15.5.5); not
            # retried (no 503: nothing is temporary), not cached (a catalog may be added), nothing logged
            return Response(json.dumps({"error": engine.no_catalog_message(state.dataset),
                                        "request_id": REQUEST_ID.get()}), status_code=404,
                            media_type="application/json", headers={"Cache-Control": "no-store"})
        if channel is not None and channel not in state.catalog.channels:
            return _client_error(f"channel: unknown channel {channel!r}; channels are {state.catalog.channels}")
        if at is not None and not self.settings.simulation_clock:
            return _client_error("at: the decision time can only be set on a server started with --simulation-clock "
                                 "(CVM_SIMULATION_CLOCK=1)")
        now_us = to_us(at) if at is not None else None
        try:
            # scored inline on the event loop (a few ms of numpy: a thread would cost more);
            # the decision is committed by the group committer's thread with those of the
            # concurrent requests, so the loop scores the next ones while the disk syncs
            # (benchmarks/bench_decisions.py). A log that stalls holds the answer up to the
            # store's timeouts (SQLite busy 5 s, PostgreSQL connect 2 s), then it is a 503.
            answer = await engine.recommend_grouped(state, customer_id, committer=self.committer, k=k,
                                                    channel=channel, exclude_offer_ids=exclude_offer_ids,
                                                    now_us=now_us)
        except DecisionStoreUnavailable as exc:
            _metric("unavailable").labels(reason="decision_log").inc()
            log.error("recommend refused: %s", exc)
            return _unavailable(f"decision log unavailable, no decision was made: {exc}")
        except PolicyUnavailable as exc:
            _metric("unavailable").labels(reason="contact_policy").inc()
            return _unavailable(str(exc))
        except (OnlineStoreError, EventLogUnavailable) as exc:
            _metric("unavailable").labels(reason="online_store").inc()
            log.error("recommend refused: %s", exc)
            return _unavailable(f"{exc}; no decision was made")
        _metric("decisions").labels(arm=answer["arm"]).inc()
        log.debug("recommend k=%d offers=%d found=%s %.1f ms", k, len(answer["offers"]), answer["found"],
                  (time.perf_counter() - t0) * 1e3)
        return _json({"request_id": REQUEST_ID.get(), "model_versions": state.model_versions, **answer}, state)

    @bentoml.api(route="/outcomes")
    async def outcomes(
        self,
        outcomes: Annotated[list[OutcomeEvent], Field(min_length=1, max_length=MAX_OUTCOMES, description=(
            f"1 to {MAX_OUTCOMES} outcome events: outcome_id (idempotency key), decision_id, type "
            f"({', '.join(OUTCOME_TYPES)}), timestamp, optional value."))],
    ) -> OutcomesResponse:
        """Record what happened after decisions. The batch is written whole or not at all:
        an unknown decision id is a 422 naming it. An ``outcome_id`` already recorded is
        skipped and counted in ``duplicates``. ``not_shown`` releases a decision that was
        never shown to the customer: it stops counting toward caps and cooldowns."""
        try:
            counts = await _compute(len(outcomes), self.decisions.record_outcomes, outcomes)
        except OutcomeError as exc:
            _metric("outcomes").labels(result="refused").inc(len(outcomes))
            return _client_error(str(exc), status=422)
        except DecisionStoreUnavailable as exc:
            log.error("outcomes refused: %s", exc)
            return _unavailable(f"decision log unavailable, nothing was written: {exc}")
        _metric("outcomes").labels(result="written").inc(counts.written)
        _metric("outcomes").labels(result="duplicate").inc(counts.duplicates)
        return _json({"request_id": REQUEST_ID.get(), **counts.to_dict()})

    @bentoml.api(route="/events")
    async def events(
        self,
        events: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_EVENTS, description=(
            f"1 to {MAX_EVENTS} events: event_id (idempotency key), customer_id or identifier "
            "{type, value}, type (view, add_to_cart, purchase, ...), timestamp (with a time zone), "
            "properties (flat scalars; a purchase needs order_id and amount)."))],
    ) -> EventsResponse:
        """Record behavioural events. The batch is checked whole first: a bad event is a 422 naming its
        position, its event_id and the field, and nothing of the batch is written. An ``event_id`` already
        recorded is skipped and counted in ``duplicates``. An identifier no profile holds gets an
        anonymous profile of its own. Accepted events are on disk before the answer."""
        from profiles.events import ingest
        from sources.event_log.records import EventError

        try:
            counts = await _compute(len(events), ingest, events, self.event_log, self._identifiers(),
                                    now=datetime.now(UTC))
        except EventError as exc:
            _metric("events").labels(result="refused").inc(len(events))
            return _client_error(str(exc), status=422)
        except EventLogUnavailable as exc:  # Redis down: nothing acknowledged, the client retries
            log.error("events refused: %s", exc)
            return _unavailable(f"{exc}; nothing was written")
        except OSError as exc:  # the disk (sqlite3.OperationalError is not an OSError: below)
            log.error("events refused: %s", exc)
            return _unavailable(f"event log unavailable, nothing was written: {exc}")
        except Exception as exc:
            import sqlite3

            if not isinstance(exc, sqlite3.Error):
                raise
            log.error("events refused: %s", exc)
            return _unavailable(f"event log unavailable, nothing was written: {exc}")
        _metric("events").labels(result="written").inc(counts.written)
        _metric("events").labels(result="duplicate").inc(counts.duplicates)
        return _json({"request_id": REQUEST_ID.get(), "received": counts.received, "written": counts.written,
                      "duplicates": counts.duplicates})

    @bentoml.api(route="/admin/reload")
    def reload(self) -> ReloadResponse:
        """Check the registry and the snapshot now and swap in what changed (admin key).
        Other workers follow within a second."""
        try:
            outcome = self.holder.load()
        except NotReadyError as exc:
            raise ServiceUnavailable(f"reload failed, still serving the loaded state: {exc}") from None
        self.holder.request_reload_everywhere()
        return ReloadResponse(changed=outcome.changed, model_versions=outcome.versions,
                              snapshot_version=outcome.snapshot, message=outcome.message, failures=outcome.failures)


class _EnvGuard(GuardMiddleware):
    """``GuardMiddleware`` with the keys of ``CVM_API_KEYS`` / ``CVM_ADMIN_KEYS``, read when the
    server builds its app (not at import, so ``bentoml build`` needs no keys)."""

    def __init__(self, app) -> None:
        settings = _settings()
        super().__init__(app, api_keys=settings.api_keys, admin_keys=settings.admin_keys, no_auth=settings.no_auth)


CVMService.add_asgi_middleware(_EnvGuard)
