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
from fastapi.responses import JSONResponse
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

# Statuses the framework raises itself (routing, parsing), and the catch-all.
FRAMEWORK_TYPES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
}


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SaringError)
    async def _saring(_: Request, exc: SaringError) -> JSONResponse:
        status, type = status_of(exc)
        return error_response(status, type, exc.message, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, FRAMEWORK_TYPES.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error: %s", type(exc).__name__)
        return error_response(500, "internal_error", "internal error; see the server log")
