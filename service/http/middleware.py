"""Pure ASGI middleware: body-size limit, request metrics and one JSON log line per request."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import error_response
from service.metrics import ServiceMetrics

access_log = logging.getLogger("saring.access")


class _BodyTooLarge(HTTPException):
    """Raised from `receive` while streaming; FastAPI passes HTTPExceptions to the error handler."""


class RequestGuard:
    """Refuses bodies over `max_body_bytes` (413, by header or while streaming), measures, logs."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        limit = self.max_body_bytes
        too_large = f"request body larger than {limit} bytes (SARING_MAX_BODY_BYTES)"

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode("latin-1")))
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(413, too_large)
            return message

        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > limit:
                await error_response(413, "payload_too_large", too_large)(scope, receive, send_wrapper)
            else:
                try:
                    await self.app(scope, receive_wrapper, send_wrapper)
                except _BodyTooLarge:
                    await error_response(413, "payload_too_large", too_large)(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            fields = {
                "request_id": request_id,
                "method": scope.get("method"),
                "route": path,
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
            }
            fields.update(scope["state"].get("log_fields", {}))
            access_log.info("request", extra={"fields": fields})
