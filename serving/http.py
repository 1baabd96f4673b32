"""HTTP concerns the API methods should not see: API keys, request ids, body size, body format.

``GuardMiddleware`` is a plain ASGI middleware added to the BentoML service:

* every path except the probes, ``/metrics`` and the OpenAPI page needs
  ``Authorization: Bearer <key>``; keys are compared in constant time
  (``hmac.compare_digest`` against every configured key); ``/admin/*`` needs an admin
  key. A key sent in the query string is refused (URLs end up in logs and proxies);
* a request id (the caller's ``X-Request-ID`` when it is a safe token, else a new one)
  goes into the response header and into every log line written while serving it,
  including the access line this middleware writes (method, path, status, time);
* a body above ``max_body_bytes`` is answered 413: unread when its ``Content-Length``
  says so, else as soon as reading it passes the limit;
* the API takes JSON objects only. A POST, PUT or PATCH to any path but the public ones
  (every API route, whatever its name: no list of routes here) is read here, within the
  size limit, and refused before BentoML sees it when it is not one. 415 Unsupported
  Media Type for a ``Content-Type`` other than ``application/json`` (multipart and form
  bodies included: BentoML would parse those as forms, and answers a multipart type
  without a boundary with a 500), a charset other than UTF-8 or a body without a
  ``Content-Type`` (with ``Accept: application/json``), and for a ``Content-Encoding`` other
  than ``identity`` (with ``Accept-Encoding: identity``); 400 for a body that is not UTF-8,
  not JSON, or JSON but not an object. An empty body passes (BentoML reads it as ``{}``:
  the API's own validation names the missing fields);
* BentoML's own 400s (pydantic validation errors) get an ``error`` naming the problem,
  ``detail`` as the string its OpenAPI document promises, and the request id.

Refusals are JSON ``{"error": ..., "request_id": ...}``; an error names what is wrong
(the field, the media type, the JSON syntax error's position), never the body's content.
Nothing here logs a key, a body or a customer id.
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

from pydantic_core import from_json

log = logging.getLogger("cvm.serving.http")
access = logging.getLogger("cvm.serving.access")  # one line per API request: method, path, status, time

#: the request being served (for log lines); "-" outside a request
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("cvm_request_id", default="-")

PUBLIC_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/", "/docs.json", "/schema.json"})
PUBLIC_PREFIXES = ("/static_content/", "/assets/")
ADMIN_PREFIX = "/admin/"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUERY_KEY = re.compile(rb"(^|&)(api[_-]?key|key|token|access_token)=", re.IGNORECASE)
#: methods whose request carries content (RFC 9110): their bodies are checked on the API paths
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_MEDIA_TYPE = "application/json"
#: a media type, charset or content coding as it may be quoted in an error (RFC 9110 tokens)
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&*+.^_`|~-]{1,64}(/[A-Za-z0-9!#$%&*+.^_`|~-]{1,64})?$")
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}

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


def _documented_400(messages: list[dict], rid: str) -> list[dict]:
    """BentoML answers an invalid request body with ``error`` "1 validation error for Input"
    and ``detail`` as a list of pydantic errors while its OpenAPI document says ``detail`` is
    a string: make ``error`` name the problem (``invalid input: customer_ids: Field
    required``), ``detail`` the readable string of every error, keep the list under
    ``errors`` and add the request id. Any other 400 goes out as it is."""
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("detail"), list):
        return [start, {"type": "http.response.body", "body": body, "more_body": False}]
    errors = data["detail"]
    readable = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', '')}"
                for e in errors if isinstance(e, dict)]
    shown = "; ".join(readable[:3]) + (f" (and {len(readable) - 3} more)" if len(readable) > 3 else "")
    data["error"] = f"invalid input: {shown}" if readable else str(data.get("error", "invalid input"))
    data["detail"] = "; ".join(readable)
    data["errors"] = errors
    data.setdefault("request_id", rid)
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
            takes_json = scope.get("method") in BODY_METHODS and not _is_public(scope["path"])
            refusal = self._refusal(scope, headers)
            if refusal is None and takes_json:
                refusal = _content_headers_refusal(headers)
            if refusal is None and scope.get("method") in BODY_METHODS and (
                    takes_json or b"content-length" not in headers):
                # the API's bodies are checked whole; a chunked body elsewhere has no length to
                # check up front: read either here, within the limit
                body, outcome = await _read_body(receive, self.max_body_bytes)
                if outcome == "disconnected":
                    return  # nobody to answer
                if outcome == "too_big":
                    refusal = 413, f"request body too large: limit {self.max_body_bytes} bytes", []
                elif takes_json:
                    refusal = _body_refusal(headers, body)
                receive = _replay(body, receive)
            if refusal is not None:
                status, message, extra = refusal
                log.info("refused %s %s: %d %s", scope.get("method"), scope.get("path"), status, message)
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
                    for out in _documented_400(held, rid):
                        await send(out)
                    return
                await send(message)

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


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, str]:
    """The whole body and "ok", or b"" and "too_big" (more than ``limit`` bytes) or
    "disconnected" (the client left before sending all of it)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", "disconnected"
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", "too_big"
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), "ok"


def _shown(value: str, what: str) -> str:
    """A header's token quoted for an error message, or a neutral word when it is not a token."""
    return f"'{value}'" if _TOKEN.match(value) else f"(malformed {what})"


def _media_type(headers: dict[bytes, bytes]) -> tuple[str, dict[str, str]] | None:
    """The request's ``Content-Type``, lower-cased, and its parameters; None without one."""
    raw = headers.get(b"content-type", b"").decode("latin-1").strip()
    if not raw:
        return None
    kind, *params = raw.split(";")
    parsed = {}
    for param in params:
        name, _, value = param.partition("=")
        parsed[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), parsed


def _content_headers_refusal(headers: dict[bytes, bytes]) -> tuple[int, str, list] | None:
    """415 for content the API cannot read whatever the body: a media type other than JSON,
    a charset other than UTF-8, a content coding (RFC 9110 15.5.16)."""
    encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
    if encoding and encoding != "identity":
        return 415, (f"unsupported Content-Encoding {_shown(encoding, 'Content-Encoding')}: send the body "
                     "uncompressed"), [(b"accept-encoding", b"identity")]
    media = _media_type(headers)
    if media is None:
        return None
    kind, params = media
    if kind != JSON_MEDIA_TYPE:
        return 415, (f"unsupported media type {_shown(kind, 'Content-Type')}: the API takes JSON, send "
                     f"'Content-Type: {JSON_MEDIA_TYPE}'"), [(b"accept", JSON_MEDIA_TYPE.encode())]
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        return (415, f"unsupported charset {_shown(charset, 'charset')}: JSON bodies are UTF-8",
                [(b"accept", JSON_MEDIA_TYPE.encode())])
    return None


def _body_refusal(headers: dict[bytes, bytes], body: bytes) -> tuple[int, str, list] | None:
    """415 for a body without a ``Content-Type``; 400 for one that is not a UTF-8 JSON object.
    The messages give the kind of error and its position, never the body's content."""
    if not body:
        return None
    if _media_type(headers) is None:
        return (415, f"missing Content-Type: send the body as JSON with 'Content-Type: {JSON_MEDIA_TYPE}'",
                [(b"accept", JSON_MEDIA_TYPE.encode())])
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return 400, f"request body is not valid UTF-8 (byte {exc.start})", []
    try:
        data = from_json(body)
    except ValueError as exc:  # pydantic's parser, the one BentoML validates the body with
        return 400, f"request body is not valid JSON: {exc}", []
    if not isinstance(data, dict):
        return 400, f"request body must be a JSON object, not {_JSON_KINDS.get(type(data), 'that')}", []
    return None


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
