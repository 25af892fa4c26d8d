"""`python -m service`: serve the configured model folder with uvicorn (one worker per process)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.main import STARTUP_FAILURE

from service.http.app import create_app
from service.http.protocol import StrictHttpToolsProtocol
from service.logs import configure_logging
from service.settings import get_settings


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain before its graceful shutdown. The first SIGTERM (or SIGINT) calls
    `begin_drain` (/readyz 503, `Connection: close` on every answer) and keeps serving for `drain_s`,
    so load balancers stop sending and keep-alive connections end after an answer rather than under a
    request; then uvicorn's own shutdown runs (stop accepting, finish accepted requests). A second
    signal skips the rest of the drain."""

    def __init__(self, config: uvicorn.Config, begin_drain: Callable[[], None], drain_s: float) -> None:
        super().__init__(config)
        self.begin_drain = begin_drain
        self.drain_s = drain_s
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_until is None and sig in (signal.SIGTERM, signal.SIGINT):
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            self.drain_until = time.monotonic() + self.drain_s
            self.begin_drain()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            return True  # drained: uvicorn's shutdown follows
        return await super().on_tick(counter)


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    # uvicorn handles SIGTERM itself (stop accepting, finish accepted requests, lifespan shutdown) and
    # then raises SIGTERM again under the handler it found at start. With the default one the process
    # would die of the signal (status 143) after a complete, clean shutdown; this one makes it exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,  # one copy of the model per process; scale with replicas
        access_log=False,  # saring logs its own JSON line per request, without client addresses
        # The C event loop and HTTP parser cut the event loop's CPU per call (bench/http_cost.py); the
        # parser refuses HTTP/0.9 request lines as h11 did (service/http/protocol.py).
        loop="uvloop",
        http=StrictHttpToolsProtocol,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        # Bounds on what slow or idle clients can hold; header and body timeouts belong to the reverse
        # proxy in front (README: limits and security), the body timeout is also enforced in RequestGuard.
        limit_concurrency=settings.limit_concurrency,
        backlog=settings.backlog,
    )
    server = DrainingServer(config, app.state.saring.begin_drain, settings.drain_s)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
