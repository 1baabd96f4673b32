"""HTTP concerns the API methods should not see: API keys, request ids, body size.

``GuardMiddleware`` is a plain ASGI middleware added to the BentoML service:

* every path except the probes, ``/metrics`` and the OpenAPI page needs
  ``Authorization: Bearer <key>``; keys are compared in constant time
  (``hmac.compare_digest`` against every configured key); ``/admin/*`` needs an admin
  key. A key sent in the query string is refused (URLs end up in logs and proxies);
* a request id (the caller's ``X-Request-ID`` when it is a safe token, else a new one)
  goes into the response header and into every log line written while serving it,
  including the access line this middleware writes (method, path, status, time);
* bodies above ``max_body_bytes`` are answered 413 without being read.

Refusals are JSON ``{"error": ...}``. Nothing here logs a key, a body or a customer id.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("cvm.serving.http")
access = logging.getLogger("cvm.serving.access")  # one line per API request: method, path, status, time

#: the request being served (for log lines); "-" outside a request
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("cvm_request_id", default="-")

PUBLIC_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/", "/docs.json", "/schema.json"})
PUBLIC_PREFIXES = ("/static_content/", "/assets/")
ADMIN_PREFIX = "/admin/"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUERY_KEY = re.compile(rb"(^|&)(api[_-]?key|key|token|access_token)=", re.IGNORECASE)

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    """Constant time in the candidate's content: every key is compared, no early exit."""
    given = candidate.encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(given, k.encode())
    return ok


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's id, or '-')."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def _documented_400(messages: list[dict]) -> list[dict]:
    """BentoML answers an invalid request body with ``detail`` as a list of pydantic errors
    while its OpenAPI document says ``detail`` is a string: make ``detail`` the readable
    string (``customer_ids: Field required``) and keep the list under ``errors``."""
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("detail"), list):
        return [start, {"type": "http.response.body", "body": body, "more_body": False}]
    errors = data["detail"]
    data["detail"] = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', '')}"
                               for e in errors if isinstance(e, dict))
    data["errors"] = errors
    new = json.dumps(data).encode()
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new)).encode()))
    return [{**start, "headers": headers}, {"type": "http.response.body", "body": new, "more_body": False}]


class GuardMiddleware:
    def __init__(self, app, *, api_keys: Sequence[str] = (), admin_keys: Sequence[str] = (),
                 no_auth: bool = False, max_body_bytes: int = 1 << 20):
        self.app = app
        self.api_keys = tuple(api_keys)
        self.admin_keys = tuple(admin_keys)
        self.no_auth = no_auth
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        try:
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                status, message, extra = refusal
                log.info("refused %s %s: %s", scope.get("method"), scope.get("path"), message)
                await _json(send, status, {"error": message, "request_id": rid},
                            [(b"x-request-id", rid.encode()), *extra])
                return

            started = time.perf_counter()
            status = [500]

            held: list[dict] = []  # a 400's start and body, rewritten before they go out

            async def send_with_headers(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    hdrs = list(message.get("headers", []))
                    hdrs.append((b"x-request-id", rid.encode()))
                    message = {**message, "headers": hdrs}
                    if status[0] == 400:
                        held.append(message)
                        return
                elif held:
                    held.append(message)
                    if message.get("more_body"):
                        return
                    for out in _documented_400(held):
                        await send(out)
                    return
                await send(message)

            if b"content-length" not in headers and scope.get("method") in ("POST", "PUT", "PATCH"):
                # a chunked body has no length to check up front: read it here, within the limit
                body, too_big = await _read_body(receive, self.max_body_bytes)
                if too_big:
                    await _json(send, 413, {"error": f"request body too large: limit {self.max_body_bytes} bytes",
                                            "request_id": rid}, [(b"x-request-id", rid.encode())])
                    return
                receive = _replay(body, receive)
            try:
                await self.app(scope, receive, send_with_headers)
            finally:
                if not _is_public(scope["path"]):
                    access.info("%s %s %d %.1f ms", scope.get("method"), scope["path"], status[0],
                                (time.perf_counter() - started) * 1e3)
        finally:
            REQUEST_ID.reset(token)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, list] | None:
        path = scope["path"]
        length = headers.get(b"content-length")
        if length is not None:
            try:
                if int(length) > self.max_body_bytes:
                    return 413, f"request body too large: limit {self.max_body_bytes} bytes", []
            except ValueError:
                return 400, "invalid Content-Length header", []
        if _is_public(path):
            return None
        if _QUERY_KEY.search(scope.get("query_string", b"")):
            return 401, ("API keys are not accepted in the URL (URLs end up in logs): send "
                         "'Authorization: Bearer <key>'"), [(b"www-authenticate", b"Bearer")]
        admin = path.startswith(ADMIN_PREFIX)
        if self.no_auth and not admin:
            return None
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, key = auth.partition(" ")
        if not auth:
            return 401, "missing API key: send 'Authorization: Bearer <key>'", [(b"www-authenticate", b"Bearer")]
        if scheme.lower() != "bearer" or not key.strip():
            return 401, "malformed Authorization header: expected 'Bearer <key>'", [(b"www-authenticate", b"Bearer")]
        keys = self.admin_keys if admin else self.api_keys
        if admin and not keys:
            return 403, "admin endpoints are disabled: set CVM_ADMIN_KEYS", []
        if not key_matches(key.strip(), keys):
            return (403 if admin and key_matches(key.strip(), self.api_keys) else 401,
                    "invalid admin key" if admin else "invalid API key", [(b"www-authenticate", b"Bearer")])
        return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, original: Receive) -> Receive:
    """The body already read, then the connection's own messages (its disconnect)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})
