"""Request dependencies as `Annotated` aliases, as in the FastAPI full-stack template.

They are `async def`: they never block, and a plain `def` would cost every request a hop through the
thread pool, which under a burst delays even the immediate 429s by hundreds of ms. The API key is
not a dependency: FastAPI reads and parses the body before dependencies run, and an unauthenticated
caller must get 401 before that, so RequestGuard (middleware.py) checks it from the headers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.core.state import AppState
from service.errors import NotReady
from service.http.schemas import message_limit


async def get_state(request: Request) -> AppState:
    state = request.app.state.saring
    message_limit.set(state.settings.max_messages_per_request)  # checked before the body is validated
    return state


State = Annotated[AppState, Depends(get_state)]


async def require_ready(state: State) -> None:
    if not state.ready:
        raise NotReady("model is still loading", retry_after=5)


Ready = Depends(require_ready)
