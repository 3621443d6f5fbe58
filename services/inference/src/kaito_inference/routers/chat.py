"""``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from kaito_inference.protocol.chat import ChatCompletionRequest
from kaito_inference.routers.deps import services
from kaito_inference.routers.responses import respond
from kaito_inference.serving import Services

__all__ = ["router"]

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions")
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, serving: Annotated[Services, Depends(services)]
) -> Response:
    """Answer a conversation (``stream: true`` answers with server-sent events)."""
    return respond(await serving.chat.create(body, request.is_disconnected))
