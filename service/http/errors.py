"""The one place where errors become HTTP: status, error `type`, body and `Retry-After`.

The core raises typed errors (service/errors.py) and knows no status codes; this table maps each
type to its answer, like text-embeddings-inference's `From<TextEmbeddingsError> for ErrorResponse`.
Framework errors (bad JSON, wrong types, unknown routes) get the same `{"error": {"type", "message"}}`
shape. README's refusal table lists every `type` here, and a test keeps it complete.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    FeedbackUnavailable,
    InvalidInput,
    ModelFailed,
    ModelFolderRefused,
    NotReady,
    Overloaded,
    SaringError,
    TimedOut,
    TooLarge,
)

logger = logging.getLogger("saring")


class Unauthorized(SaringError):
    """API keys are configured and the request has none or a wrong one."""


class Forbidden(SaringError):
    """The endpoint is switched off by configuration (admin routes without API keys)."""


# Typed errors -> (status, type). Order matters only for subclasses, and there are none.
ERROR_STATUS: dict[type[SaringError], tuple[int, str]] = {
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    TooLarge: (413, "payload_too_large"),
    InvalidInput: (422, "invalid_request"),
    ModelFolderRefused: (422, "model_folder_invalid"),
    Overloaded: (429, "overloaded"),
    ModelFailed: (500, "model_error"),
    TimedOut: (503, "timeout"),
    NotReady: (503, "not_ready"),
    FeedbackUnavailable: (503, "feedback_unavailable"),
}

# Statuses the edge answers itself (routing, body checks in middleware.py, parsing), and the catch-all.
FRAMEWORK_TYPES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
}

# Why FastAPI could not turn body bytes into JSON (it answers all of these "400 There was an error
# parsing the body"): the body is not valid JSON, the same 422 `invalid_request` as a syntax error.
_UNPARSABLE = (
    (UnicodeDecodeError, "request body is not valid UTF-8 (send JSON encoded as UTF-8, uncompressed)"),
    (RecursionError, "request body nests too deeply to parse (keep JSON nesting well under 1000 levels)"),
    (ValueError, "request body has a number too long to parse (over 4300 digits)"),
)


def status_of(exc: SaringError) -> tuple[int, str]:
    """(HTTP status, error type) of a typed error."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500, "internal_error"


def error_response(status: int, type: str, message: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
    return JSONResponse({"error": {"type": type, "message": message}}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    """'messages.0.text: Field required' without echoing the (possibly private) input."""
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def allowed_methods(allow: str) -> str:
    """The Allow header for a route: its methods, HEAD with GET (served as GET), and OPTIONS."""
    methods = {m.strip() for m in allow.split(",") if m.strip()}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods | {"OPTIONS"}))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SaringError)
    async def _saring(_: Request, exc: SaringError) -> JSONResponse:
        status, type = status_of(exc)
        return error_response(status, type, exc.message, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            allow = allowed_methods(exc.headers.get("Allow", "") if exc.headers else "")
            if request.method == "OPTIONS":  # what may be sent here: the answer to OPTIONS
                return Response(status_code=204, headers={"Allow": allow})
            message = f"method {request.method} is not allowed here; allowed: {allow}"
            response = error_response(405, "method_not_allowed", message)
            response.headers["Allow"] = allow
            return response
        if exc.status_code == 400 and exc.__cause__ is not None:
            for cause, message in _UNPARSABLE:
                if isinstance(exc.__cause__, cause):
                    return error_response(422, "invalid_request", message)
        status = exc.status_code
        type = FRAMEWORK_TYPES.get(status) or ("internal_error" if status >= 500 else "bad_request")
        return error_response(status, type, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error: %s", type(exc).__name__)
        return error_response(500, "internal_error", "internal error; see the server log")
