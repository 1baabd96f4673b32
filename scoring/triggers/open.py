"""Where a dataset's trigger state lives: on Redis when ``CVM_REDIS_URL`` (or ``redis_url``) is
set, beside the Redis event log whose cursor it keeps; in the embedded SQLite file under
CVM_HOME (``triggers/<dataset>/triggers.sqlite``) otherwise."""

from __future__ import annotations

import os

from base.home import Home
from scoring.triggers.store import TriggerStore


def open_trigger_store(home: Home, dataset: str, *, redis_url: str | None = None):
    """The dataset's trigger store (``TriggerStore`` or ``scoring.triggers.redis_store.RedisTriggerStore``)."""
    url = redis_url or os.environ.get("CVM_REDIS_URL") or None
    if url:
        from scoring.triggers.redis_store import RedisTriggerStore

        return RedisTriggerStore(url, dataset)
    return TriggerStore(home.triggers(dataset, ensure=True) / "triggers.sqlite")
