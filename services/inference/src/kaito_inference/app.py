"""The app factory: ``create_app(settings, *, engine=...)`` builds the OpenAI server.

Nothing is built at import. The engine starts loading when the app starts, so ``/health``
answers 503 at once and 200 when the model is ready; it stops when the app shuts down.
"""

# ruff: noqa: PLC0415  (heavy or optional imports stay inside the functions that use them)

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kaito_inference.body_limit import BodyLimitMiddleware
from kaito_inference.engines.base import Engine
from kaito_inference.metrics import InferenceMetrics
from kaito_inference.routers import ROUTERS
from kaito_inference.routers.errors import install_error_handlers
from kaito_inference.serving import Services
from kaito_inference.settings import InferenceSettings

__all__ = ["create_app"]


def create_app(
    settings: InferenceSettings | None = None,
    *,
    engine: Engine | None = None,
    metrics: InferenceMetrics | None = None,
) -> FastAPI:
    """An app serving ``engine`` (default: a :class:`TransformersEngine` for ``settings``).

    ``settings`` defaults to the ``KAITO_INFERENCE_*`` environment.
    """
    settings = settings or InferenceSettings()
    metrics = metrics or InferenceMetrics()
    if engine is None:
        from kaito_inference.engines.transformers_engine import TransformersEngine

        engine = TransformersEngine(settings, metrics)
    _bind_queue_gauges(engine, metrics)
    served = engine

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        served.start()
        try:
            yield
        finally:
            served.stop()

    app = FastAPI(title="kaito-inference", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.services = Services.build(
        engine,
        metrics,
        runtime_lora=settings.enable_lora_runtime_loading,
        lora_root=settings.lora_allowed_root(),
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    return app


def _bind_queue_gauges(engine: Engine, metrics: InferenceMetrics) -> None:
    """Read the running and waiting counts from the engine when scraped."""
    metrics.requests_running.set_function(lambda: engine.queue_depth()[0])
    metrics.requests_waiting.set_function(lambda: engine.queue_depth()[1])
