"""The service's trigger engine (``scoring.triggers``), wired to what the service serves.

With ``CVM_TRIGGERS`` set, every worker starts a ``TriggerRunner``; the store's lease lets
one of them run it. A fired trigger decides as ``/recommend`` does, on the state the
service serves (champions, catalog, contact policy, control groups, the fresh vector),
logged with source ``trigger:<name>``; while the service is not ready or the decision log
is down, due timers wait. Score and ``segment_entry`` triggers are judged on the fresh
vector (its scores, the dataset's real-time segments re-evaluated on it) against the
snapshot's (where a customer starts from).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from base.home import Home
from scoring.decisions import DecisionStoreUnavailable
from scoring.live import PolicyUnavailable
from scoring.segments.definitions import load_segments, resolve_segments_path
from scoring.segments.evaluate import evaluate_one
from scoring.triggers.engine import Probe, RetryLater, TriggerEngine
from scoring.triggers.open import open_trigger_store
from scoring.triggers.rules import OnSegmentEntry, TriggerConfigError, load_triggers
from scoring.triggers.runner import TriggerRunner
from serving import engine
from serving.settings import ServiceSettings
from sources.event_log.open import open_event_log

log = logging.getLogger("cvm.serving.triggers")

_SCORES = ("churn_probability", "next_purchase_probability", "expected_orders", "clv")


def _scores(cs, i: int) -> dict[str, float]:
    return {k: float(getattr(cs, k)[i]) for k in _SCORES}


def realtime_segments(settings: ServiceSettings, config) -> list:
    """The dataset's real-time segments that ``segment_entry`` triggers name (checked: each exists
    and is marked realtime)."""
    wanted = {t.when.segment_entry for t in config.triggers if isinstance(t.when, OnSegmentEntry)}
    if not wanted:
        return []
    path = resolve_segments_path(settings.dataset)
    defs = load_segments(path) if path is not None else []
    known = {s.name: s for s in defs if s.realtime}
    missing = sorted(wanted - set(known))
    if missing:
        raise TriggerConfigError(f"{settings.triggers}: segment_entry {missing[0]!r} is not a real-time segment of "
                                 f"{path or 'the dataset (it has no segment file)'}")
    return [known[n] for n in sorted(wanted)]


def start_triggers(settings: ServiceSettings, holder, decisions) -> TriggerRunner | None:
    """The started runner, or None without ``CVM_TRIGGERS``. ``TriggerConfigError`` on a bad file."""
    if settings.triggers is None:
        return None
    config = load_triggers(settings.triggers)
    segments = realtime_segments(settings, config)
    home = Home(settings.home)
    name = holder.dataset_name()

    def decide(customer_id: str, trigger, now_us: int) -> dict:
        state = holder.state
        if state is None:
            raise RetryLater(f"the service is not ready: {holder.last_error}")
        try:
            return engine.recommend(state, customer_id, decisions=decisions, now_us=now_us, k=trigger.k,
                                    channel=trigger.channel, source=f"trigger:{trigger.name}")
        except (DecisionStoreUnavailable, PolicyUnavailable) as exc:
            raise RetryLater(str(exc)) from None

    def probe(ids: Sequence[str]) -> dict[str, Probe]:
        state = holder.state
        if state is None:
            return {}
        now = engine.customer_scores(state, list(ids), reasons=False)[0]
        before = engine.customer_scores(state, list(ids), reasons=False, fresh_vectors=False)[0]
        fresh = state.fresh.vectors(list(ids)) if segments and state.fresh is not None else {}
        out = {}
        for i, cid in enumerate(ids):
            old = state.store.get(cid) if segments else None
            new = fresh.get(cid, (None,))[0] or old
            out[cid] = Probe(scores=_scores(now, i), before_scores=_scores(before, i),
                             segments=evaluate_one(segments, {**new, **_scores(now, i)}) if new else frozenset(),
                             before_segments=(evaluate_one(segments, {**old, **_scores(before, i)}) if old
                                              else frozenset()))
        return out

    store = open_trigger_store(home, name)
    home.events(name, ensure=True)
    runner = TriggerRunner(TriggerEngine(config, store, open_event_log(home, name), decide, probe=probe))
    runner.start()
    log.info("triggers: %d rules from %s", len(runner.engine.triggers), settings.triggers)
    return runner
