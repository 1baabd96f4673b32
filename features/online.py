"""Which online store a dataset uses: ``open_online_store`` picks Redis when ``CVM_REDIS_URL``
(or ``redis_url``) is set, the embedded SQLite store under CVM_HOME otherwise."""

from __future__ import annotations

import os
from typing import Literal

from base.home import Home
from features.online_store import OnlineStore, SQLiteOnlineStore


def open_online_store(home: Home, dataset: str, *, backend: Literal["sqlite", "redis"] | None = None,
                      redis_url: str | None = None, keep: int = 3, grace_seconds: float = 60.0) -> OnlineStore:
    """The online store of ``dataset``: on Redis when ``redis_url`` (default ``CVM_REDIS_URL``) is
    set or ``backend="redis"``, else embedded under ``home``. Creates and connects to nothing
    until a read or a publish."""
    url = redis_url or os.environ.get("CVM_REDIS_URL") or None
    chosen = backend or ("redis" if url else "sqlite")
    if chosen == "redis":
        if not url:
            raise ValueError("the redis online store needs a URL: set CVM_REDIS_URL=redis://host:port/db")
        from features.online_redis import RedisOnlineStore

        return RedisOnlineStore(url, dataset, keep=keep)
    if chosen != "sqlite":
        raise ValueError(f"unknown online store backend {chosen!r}: choose 'sqlite' or 'redis'")
    return SQLiteOnlineStore(home.online(dataset), dataset=dataset, keep=keep, grace_seconds=grace_seconds)
