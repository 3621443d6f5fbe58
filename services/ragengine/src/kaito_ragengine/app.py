"""The FastAPI app factory: nothing is built until ``create_app`` and its lifespan run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kaito_ragengine.embeddings.base import Embedder
from kaito_ragengine.embeddings.factory import build_embedder
from kaito_ragengine.errors import StartupError
from kaito_ragengine.metrics import Metrics
from kaito_ragengine.routers import chat, health, indexes, retrieve
from kaito_ragengine.routers.errors import install_exception_handlers
from kaito_ragengine.routers.middleware import RequestMetricsMiddleware
from kaito_ragengine.routers.openapi import install_openapi
from kaito_ragengine.serving.chat import ChatService
from kaito_ragengine.serving.llm import LLMClient
from kaito_ragengine.serving.rag import RagService
from kaito_ragengine.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    llm: LLMClient | None = None,
) -> FastAPI:
    """Build the RAG engine app.

    ``embedder`` and ``llm`` replace the ones the settings describe (tests pass a
    deterministic embedder); injected objects are not closed by the app. The lifespan
    restores snapshots on start and snapshots every index on shutdown, as configured.
    """
    settings = settings or Settings()
    metrics = Metrics()

    async def load_embedder() -> Embedder:
        own = embedder or build_embedder(settings)
        if embedder is None and settings.embedding_source == "local":
            try:
                await own.embed(["warm-up"])  # load the model before /health answers
            except Exception as exc:
                await own.aclose()
                raise StartupError(
                    f"embedding model {settings.embedding_model_id!r} could not be loaded: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return own

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            own_embedder = await load_embedder()
        except Exception as exc:
            app.state.startup_error = exc  # ``kaito-ragengine serve`` prints it last
            raise
        own_llm = llm
        if own_llm is None and settings.llm_inference_url:
            own_llm = LLMClient(
                settings.llm_inference_url,
                access_secret=settings.llm_access_secret,
                timeout_s=settings.llm_timeout_s,
            )
        rag = RagService(settings, own_embedder, metrics)
        app.state.rag = rag
        app.state.chat = ChatService(rag, own_llm)
        if settings.restore_on_start:
            await rag.restore_all()
        log.info(
            "RAG engine ready: %d index(es), embeddings %s", len(rag.indexes), own_embedder.model_id
        )
        try:
            yield
        finally:
            if settings.snapshot_on_shutdown:
                await rag.persist_all()
            if embedder is None:
                await own_embedder.aclose()
            if llm is None and own_llm is not None:
                await own_llm.aclose()

    app = FastAPI(
        title="KAITO RAG engine",
        version="0.1.0",
        description="Hybrid (FAISS + BM25) retrieval and OpenAI-compatible RAG chat.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.settings = settings
    install_exception_handlers(app)
    install_openapi(app, settings)
    for module in (retrieve, health, indexes, chat):  # the hot route is matched first
        app.include_router(module.router)
    app.add_middleware(
        RequestMetricsMiddleware, metrics=metrics, max_body_bytes=settings.max_request_bytes
    )
    return app
