"""Thin HTTP routers: the OpenAI endpoints, health, metrics and LoRA load/unload."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kaito_inference.engines.adapters import AdapterError, check_adapter_path
from kaito_inference.errors import OpenAIError
from kaito_inference.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadLoraRequest,
    ModelCard,
    ModelList,
    UnloadLoraRequest,
)
from kaito_inference.serving import Completion, OpenAIServing
from kaito_inference.settings import InferenceSettings

__all__ = ["build_router"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def build_router(serving: OpenAIServing, settings: InferenceSettings) -> APIRouter:
    """All routes of the server, bound to ``serving``."""
    router = APIRouter()
    engine = serving.engine

    async def respond(job: Completion, request: Request) -> Response:
        if job.stream:
            events = await serving.open_stream(job)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        return JSONResponse(await serving.complete(job, request))

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await respond(await serving.prepare_chat(body), request)

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await respond(await serving.prepare_text(body), request)

    @router.get("/v1/models")
    async def models() -> ModelList:
        serving.require_ready()
        base = engine.base_model
        cards = [ModelCard(id=base, root=base)]
        cards += [ModelCard(id=a.name, root=str(a.path), parent=base) for a in engine.adapters()]
        return ModelList(data=cards)

    @router.get("/health")
    async def health() -> dict[str, str]:
        serving.require_ready()
        return {"status": "ok"}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(serving.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def require_runtime_lora() -> None:
        if not settings.enable_lora_runtime_loading:
            raise OpenAIError(
                404,
                "runtime LoRA loading is disabled; set "
                "KAITO_INFERENCE_ENABLE_LORA_RUNTIME_LOADING=true to enable it",
                code="not_enabled",
            )
        serving.require_ready()

    @router.post("/v1/load_lora_adapter")
    async def load_lora_adapter(body: LoadLoraRequest) -> dict[str, Any]:
        require_runtime_lora()
        name = body.lora_name
        if name == engine.base_model or name in {a.name for a in engine.adapters()}:
            raise OpenAIError(
                400,
                f"a model named {name!r} is already served",
                param="lora_name",
                code="already_loaded",
            )
        try:
            path = check_adapter_path(name, body.lora_path, settings.lora_allowed_root())
        except AdapterError as exc:
            raise OpenAIError(400, str(exc), param="lora_path", code="invalid_value") from None
        await asyncio.to_thread(engine.load_adapter, name, path)
        return {"status": "loaded", "lora_name": name}

    @router.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(body: UnloadLoraRequest) -> dict[str, Any]:
        require_runtime_lora()
        if body.lora_name not in {a.name for a in engine.adapters()}:
            raise OpenAIError(
                404,
                f"no adapter named {body.lora_name!r} is loaded",
                param="lora_name",
                code="model_not_found",
            )
        try:
            await asyncio.to_thread(engine.unload_adapter, body.lora_name)
        except AdapterError as exc:
            raise OpenAIError(409, str(exc), param="lora_name", code="adapter_busy") from None
        return {"status": "unloaded", "lora_name": body.lora_name}

    return router
