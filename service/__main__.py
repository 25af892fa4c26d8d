"""`python -m service`: serve the configured model folder with uvicorn (one worker per process)."""

from __future__ import annotations

import signal

import uvicorn

from service.http.app import create_app
from service.logs import configure_logging
from service.settings import get_settings


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    # uvicorn handles SIGTERM itself (stop accepting, finish accepted requests, lifespan shutdown) and
    # then raises SIGTERM again under the handler it found at start. With the default one the process
    # would die of the signal (status 143) after a complete, clean shutdown; this one makes it exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,  # one copy of the model per process; scale with replicas
        access_log=False,  # saring logs its own JSON line per request, without client addresses
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
    )


if __name__ == "__main__":
    main()
