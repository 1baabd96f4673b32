"""One way to connect to the Redis of ``CVM_REDIS_URL``, for every store kept on it (online
features, the event log, the trigger state): bounded connect and reply timeouts, so a Redis
that is down is an error in seconds, and a health check on idle pooled connections."""

from __future__ import annotations


def redis_client(url: str, *, socket_timeout: float = 5.0):
    """A ``redis.Redis`` for ``url`` (it connects on first use)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=2,
                                health_check_interval=10)
