"""Which event log a dataset uses: on Redis when ``CVM_REDIS_URL`` (or ``redis_url``) is set, the
embedded SQLite file under CVM_HOME (``events/<dataset>/events.sqlite``) otherwise."""

from __future__ import annotations

import os

from base.home import Home
from sources.event_log.store import EventLog


def open_event_log(home: Home, dataset: str, *, redis_url: str | None = None):
    """The dataset's event log (``EventLog`` or ``sources.event_log.redis_log.RedisEventLog``)."""
    url = redis_url or os.environ.get("CVM_REDIS_URL") or None
    if url:
        from sources.event_log.redis_log import RedisEventLog

        return RedisEventLog(url, dataset)
    return EventLog(home.events(dataset) / "events.sqlite")
