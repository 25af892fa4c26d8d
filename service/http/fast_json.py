"""JSON in and out with orjson: request bodies parsed by it, answers the handlers built serialised by it.

Parsing: orjson first; a body it refuses (invalid UTF-8, a lone surrogate escape, NaN, UTF-16) is
parsed again by the standard library, so such a body gets exactly the answer it got before (the
lone-surrogate refusal names the surrogate, broken JSON is a 422 `json_invalid`). One difference is
left: orjson reads an integer beyond 64 bits as a float where the standard library keeps an int; no
field of the API is a number, so both are refused with the same message.
Answers: a handler that has built its answer from values it made itself returns `json_response`,
which skips FastAPI's validation of the response model against data that cannot be wrong, and the
pydantic objects that would be built only to be dumped (bench/http_cost.py measures both).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)  # the standard library's value or error, as before


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    """An APIRoute whose handler reads JSON bodies with `loads` (FastAPI's documented custom-route hook)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return handle


def json_response(content: Any, status_code: int = 200) -> Response:
    """`content` (dicts, lists, str, int, float, bool, None) as an application/json answer."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")
