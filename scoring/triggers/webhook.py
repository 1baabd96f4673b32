"""Webhook delivery: an HTTP POST of a fired decision, signed so the receiver can trust it.

Headers of every attempt (a retry sends the same body and key):

* ``Idempotency-Key``: the trigger id; a receiver that sees it twice has the same decision twice;
* ``X-CVM-Timestamp``: seconds since the epoch when the attempt was signed;
* ``X-CVM-Signature``: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under the
  shared secret. A receiver recomputes it (``verify``) and rejects a stale timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify(secret: str, headers, body: bytes, *, tolerance_seconds: float = 300, now: float | None = None) -> bool:
    """What a receiver runs: the signature matches (constant time) and the timestamp is recent."""
    try:
        ts = int(headers["X-CVM-Timestamp"])
    except (KeyError, ValueError, TypeError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, ts, body), str(headers.get("X-CVM-Signature", "")))


def headers_for(secret: str, idempotency_key: str, trigger: str, body: bytes, now: float | None = None) -> dict:
    ts = int(time.time() if now is None else now)
    return {"Content-Type": "application/json", "Idempotency-Key": idempotency_key, "X-CVM-Trigger": trigger,
            "X-CVM-Timestamp": str(ts), "X-CVM-Signature": sign(secret, ts, body)}


def post(client: httpx.Client, url: str, body: bytes, headers: dict, timeout: float) -> str | None:
    """One attempt: None when the receiver answered 2xx, else what went wrong (for the outbox)."""
    try:
        r = client.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    if 200 <= r.status_code < 300:
        return None
    return f"HTTP {r.status_code}"
