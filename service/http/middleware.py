"""Pure ASGI middleware: what is decided before the app reads the body, then metrics and one log line.

In this order, from headers alone: a request id (the client's X-Request-Id when it is a short plain
token holding no phone or ID number, else a fresh one), the API key (401 before anything is read or
parsed), the body's encoding and content type (415) and declared size (413). The body is then
streamed to the app through a size limit (413) and a read timeout (408, connection closed), so a
slow or silent client cannot hold a connection. HEAD is answered as GET without the body.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Iterable
from email.message import Message as MimeHeader

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.auth import UNAUTHORIZED, has_valid_key, needs_key
from service.http.errors import error_response
from service.logs import mask_pii
from service.metrics import ServiceMetrics

access_log = logging.getLogger("saring.access")

# A request id is echoed in a header and logged: a short token of plain characters, or replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


class _BodyTooLarge(HTTPException):
    """Raised from `receive` while streaming; FastAPI passes HTTPExceptions to the error handler."""


class _BodyTimedOut(HTTPException):
    """Raised from `receive` when the body is not in by the deadline."""


def request_id_of(supplied: bytes) -> str:
    """The client's X-Request-Id if it is 1-64 plain characters and no phone or ID number; else a new one."""
    text = supplied.decode("latin-1")
    if _REQUEST_ID.fullmatch(text) and mask_pii(text) == text:
        return text
    return uuid.uuid4().hex


def is_json(content_type: bytes) -> bool:
    header = MimeHeader()
    header["content-type"] = content_type.decode("latin-1")
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        body_timeout_s: float,
        api_keys: Iterable[str] | None = None,
        state: object | None = None,
        also_protected: Iterable[str] = (),
        json_routes: Iterable[BaseRoute] = (),
    ) -> None:
        """`state.api_keys` (read per request) or `api_keys`: the keys; `also_protected`: paths outside
        /v1/ that need the key too (docs, metrics) when keys are set; `json_routes`: the routes that read
        a JSON body (a body sent to them must say Content-Type: application/json)."""
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self._keys = list(api_keys or [])
        self._state = state
        self.also_protected = frozenset(also_protected)
        self.json_routes = list(json_routes)

    @property
    def api_keys(self) -> list[str]:
        return self._state.api_keys if self._state is not None else self._keys

    def refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, str] | None:
        """(status, type, message) of a refusal decided from the headers alone, or None."""
        keys = self.api_keys
        if needs_key(scope["path"], keys, self.also_protected) and not has_valid_key(
            headers.get(b"authorization", b""), keys
        ):
            return 401, "unauthorized", UNAUTHORIZED
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"", b"identity"):
            shown = encoding.decode("latin-1")[:40]
            return 415, "unsupported_media_type", f"Content-Encoding {shown!r} is not supported: send the body as it is"
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        has_body = declared > 0 or b"transfer-encoding" in headers
        if has_body and self.reads_json_body(scope):
            content_type = headers.get(b"content-type", b"")
            if not is_json(content_type):
                shown = content_type.decode("latin-1")[:60] or "none"
                return 415, "unsupported_media_type", f"Content-Type must be application/json (got {shown!r})"
        if declared > self.max_body_bytes:
            return 413, "payload_too_large", self.too_large
        return None

    def reads_json_body(self, scope: Scope) -> bool:
        """The request goes to a JSON route with an allowed method; unknown paths and wrong methods are
        left to the router (404, 405)."""
        return any(route.matches(scope)[0] is Match.FULL for route in self.json_routes)

    @property
    def too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes (SARING_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = request_id_of(headers.get(b"x-request-id", b""))
        scope.setdefault("state", {})["request_id"] = request_id
        method = scope.get("method")
        head = method == "HEAD"
        # HEAD is GET without the body: the app sees GET (so GET routes answer it and others say 405).
        app_scope = {**scope, "method": "GET"} if head else scope
        status = 500
        timed_out = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode("latin-1"))]
                if timed_out:  # the rest of the body may still be coming: do not read it, close
                    extra.append((b"connection", b"close"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        received = 0
        body_done = False
        deadline = time.monotonic() + self.body_timeout_s

        async def receive_wrapper() -> Message:
            nonlocal received, body_done, timed_out
            if body_done:  # after the body only a disconnect can come: no deadline on waiting for it
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                timed_out = True
                raise _BodyTimedOut(
                    408, f"request body not received within {self.body_timeout_s:g} s (SARING_BODY_TIMEOUT_S)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(413, self.too_large)
                body_done = not message.get("more_body", False)
            return message

        try:
            refused = self.refusal(app_scope, headers)
            if refused:
                await error_response(*refused)(scope, receive, send_wrapper)
            else:
                try:
                    await self.app(app_scope, receive_wrapper, send_wrapper)
                except _BodyTooLarge as exc:
                    await error_response(413, "payload_too_large", exc.detail)(scope, receive, send_wrapper)
                except _BodyTimedOut as exc:
                    await error_response(408, "request_timeout", exc.detail)(scope, receive, send_wrapper)
        finally:
            route = app_scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            fields = {
                "request_id": request_id,
                "method": method,
                "route": path,
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
            }
            fields.update(scope["state"].get("log_fields", {}))
            access_log.info("request", extra={"fields": fields})
