"""Request dependencies as `Annotated` aliases, as in the FastAPI full-stack template.

They are `async def`: they never block, and a plain `def` would cost every request a hop through the
thread pool, which under a burst delays even the immediate 429s by hundreds of ms.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.core.state import AppState
from service.errors import NotReady
from service.http.errors import Unauthorized
from service.http.schemas import message_limit


async def get_state(request: Request) -> AppState:
    state = request.app.state.saring
    message_limit.set(state.settings.max_messages_per_request)  # checked before the body is validated
    return state


State = Annotated[AppState, Depends(get_state)]


async def require_api_key(request: Request, state: State) -> None:
    """When API keys are configured, /v1/* needs `Authorization: Bearer <key>`."""
    keys = state.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    supplied = token.strip().encode() if scheme.lower() == "bearer" else b""
    # Compare against every key, in constant time, so timing tells nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied, key.encode())
    if not matched:
        raise Unauthorized("missing or invalid API key: send 'Authorization: Bearer <key>'")


async def require_ready(state: State) -> None:
    if not state.ready:
        raise NotReady("model is still loading", retry_after=5)


ApiKey = Depends(require_api_key)
Ready = Depends(require_ready)
