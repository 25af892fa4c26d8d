"""The app factory: settings in, FastAPI app out; the model loads in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from service.core.state import AppState, BackendFactory
from service.features.explain import Explainer
from service.features.feedback import AsyncFeedbackStore
from service.features.flood import FloodDetector
from service.features.flood_redis import RedisFloodDetector
from service.http.draining import CloseWhileDraining
from service.http.errors import install_error_handlers
from service.http.middleware import RequestGuard
from service.http.routes import router
from service.metrics import ServiceMetrics
from service.settings import Settings, get_settings

logger = logging.getLogger("saring")


def default_backend_factory(settings: Settings) -> BackendFactory:
    def load(model_dir: Path):
        from service.model.loading import load_backend  # imports torch or onnxruntime, lazily

        return load_backend(
            model_dir,
            kind=settings.backend,
            device=settings.device,
            num_threads=settings.threads(),
            onnx_variant=settings.onnx_variant,
            dtype=settings.dtype,
        )

    return load


def create_app(settings: Settings | None = None, backend_factory: BackendFactory | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    state = AppState(settings, metrics, backend_factory or default_backend_factory(settings))
    state.api_keys = settings.all_api_keys()
    state.feedback = AsyncFeedbackStore(settings.feedback_db_url, settings.feedback_db_path)
    if settings.flood_detection:
        state.flood = flood_detector(settings, metrics)
    state.explainer = Explainer(
        max_words=settings.explain_max_words,
        top_k=settings.explain_top_k,
        max_inflight=settings.explain_max_inflight,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.explain_batch_tokens,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state.feedback.check()  # a configured database whose driver is missing fails here, not per call
            await state.load_initial()  # a folder that fails its check batch fails here
        except Exception as exc:
            # One clear line before uvicorn's traceback and "Application startup failed".
            logger.error("start-up refused", extra={"fields": {"error": str(exc) or type(exc).__name__}})
            raise
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not in the main thread
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(_reload_quietly(state))
            )
        yield
        state.ready = False
        await state.infer.stop()
        await state.feedback.close()
        if state.flood is not None:
            state.flood.close()

    app = FastAPI(
        title="saring",
        summary="Validity and spam scores for messages to public complaint channels.",
        version="1",
        lifespan=lifespan,
    )
    app.state.saring = state
    install_error_handlers(app)
    app.include_router(router)
    # Docs and metrics are open unless asked otherwise (Prometheus scrapers and browsers send no key).
    also_protected = (
        {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url, "/metrics"} - {None}
        if settings.protect_docs_and_metrics
        else set()
    )
    app.add_middleware(
        RequestGuard,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        state=state,
        also_protected=also_protected,
        json_routes=[route for route in router.routes if getattr(route, "body_field", None) is not None],
    )
    app.add_middleware(CloseWhileDraining, state=state)  # outermost: every answer of a draining replica
    return app


def flood_detector(settings: Settings, metrics: ServiceMetrics) -> FloodDetector | RedisFloodDetector:
    """In-process, or in Redis when SARING_FLOOD_REDIS_URL is set (shared by every replica)."""
    window, cap, similarity = settings.flood_window_s, settings.flood_max_tracked, settings.flood_similarity
    if not settings.flood_redis_url:
        return FloodDetector(window, cap, similarity)
    return RedisFloodDetector(
        settings.flood_redis_url, window, cap, similarity, timeout_s=settings.flood_redis_timeout_s, metrics=metrics
    )


async def _reload_quietly(state: AppState) -> None:
    with contextlib.suppress(Exception):  # refusal is already logged and shown in /v1/model
        await state.reload()
