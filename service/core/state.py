"""What the app holds between requests: settings, metrics, the Infer queue and the served model."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.core.infer import Infer
from service.errors import ModelFolderRefused
from service.features.explain import Explainer
from service.features.feedback import AsyncFeedbackStore
from service.features.flood import FloodDetector
from service.features.flood_redis import RedisFloodDetector
from service.metrics import ServiceMetrics
from service.model.backend import Backend
from service.model.check import check_model
from service.model.scoring import THRESHOLDS
from service.settings import Settings

logger = logging.getLogger("saring")

BackendFactory = Callable[[Path], Backend]


def metrics_summary(model_dir: Path) -> dict[str, Any]:
    """Headline validation/test figures from the folder's metrics.json, for /v1/model."""
    try:
        metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {
        split: {"macro_f1": metrics[split]["macro_f1"], "n": metrics[split]["n"], **metrics[split]["decision_band"]}
        for split in ("validation", "test")
        if split in metrics
    }


@dataclass
class AppState:
    settings: Settings
    metrics: ServiceMetrics
    backend_factory: BackendFactory
    infer: Infer | None = None
    model_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    draining: bool = False  # SIGTERM arrived: /readyz says 503 and answers close their connection
    last_reload_error: str | None = None
    api_keys: list[str] = field(default_factory=list)
    feedback: AsyncFeedbackStore | None = None
    flood: FloodDetector | RedisFloodDetector | None = None  # None: flood detection switched off
    explainer: Explainer | None = None
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def load_initial(self) -> None:
        s = self.settings
        backend = await asyncio.to_thread(self.backend_factory, s.model_dir)
        self.infer = Infer(
            backend,
            self.metrics,
            max_batch_size=s.max_batch_size,
            max_batch_tokens=s.max_batch_tokens,
            max_wait_ms=s.max_wait_ms,
            max_inflight_requests=s.max_inflight_requests,
            max_queued_messages=s.max_queued_messages,
            request_timeout_s=s.request_timeout_s,
        )
        self.infer.start()
        try:  # a model answering NaN never starts serving
            await self.infer.run_on_model_thread(check_model, backend)
        except Exception:
            await self.infer.stop()
            raise
        if s.warmup:
            await self._warm_up(backend)
        self._served(backend, Path(s.model_dir))
        self.ready = True

    def begin_drain(self) -> None:
        """SIGTERM: tell load balancers to stop sending (/readyz 503) while work in flight, and calls
        still arriving, are answered."""
        if not self.draining:
            self.draining = True
            logger.info("draining: /readyz answers 503 from now on")

    async def _warm_up(self, backend: Backend) -> None:
        ids = backend.encode(["Assalamualaikum, jalan di desa kami rusak parah mohon diperbaiki"]).ids
        await self.infer.run_on_model_thread(backend.forward, ids)

    def _served(self, backend: Backend, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.summary = metrics_summary(model_dir)
        sc = backend.sidecar
        self.metrics.model_info.info(
            {"name": sc.name, "version": sc.version, "backend": backend.kind, "device": backend.device}
        )
        logger.info("serving model", extra={"fields": {"model": sc.name, "version": sc.version, "dir": str(model_dir)}})

    async def reload(self, model_dir: str | Path | None = None) -> Backend:
        """Load, check and warm a folder, then swap it in; on any failure the old model keeps serving."""
        target = Path(model_dir) if model_dir else Path(self.settings.model_dir)
        async with self._reload_lock:
            try:
                backend = await asyncio.to_thread(self.backend_factory, target)
                await self.infer.run_on_model_thread(check_model, backend)  # also warms it up
            except Exception as exc:  # whatever a broken folder raises, it is refused, never a 500
                # The reason quotes the folder: escape what UTF-8 cannot carry, or every /v1/model would fail.
                reason = (str(exc) or type(exc).__name__).encode("utf-8", "backslashreplace").decode("utf-8")
                where = str(target).encode("utf-8", "backslashreplace").decode("utf-8")
                self.last_reload_error = f"{where}: {reason}"
                self.metrics.reloads.labels("refused").inc()
                logger.error("model reload refused", extra={"fields": {"dir": where, "error": reason}})
                message = f"model folder refused, still serving the previous model: {reason}"
                raise ModelFolderRefused(message) from exc
            self.infer.swap_backend(backend)
            self.last_reload_error = None
            self.metrics.reloads.labels("ok").inc()
            self._served(backend, target)
            return backend

    def model_info(self) -> dict[str, Any]:
        backend = self.infer.backend
        sc = backend.sidecar
        return {
            "name": sc.name,
            "version": sc.version,
            "base_model": sc.base_model,
            "labels": sc.labels,
            "scores": sc.scores,
            "thresholds": {k: asdict(getattr(sc, k)) for k in THRESHOLDS},
            "temperature": sc.temperature,
            "max_length": sc.max_length,
            "created_at": sc.created_at,
            "metrics": self.summary,
            "backend": backend.kind,
            "device": backend.device,
            "precision": backend.precision,
            "model_dir": str(self.model_dir),
            "last_reload_error": self.last_reload_error,
        }
