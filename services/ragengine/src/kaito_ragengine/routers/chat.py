"""``POST /v1/chat/completions``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse

from kaito_ragengine.protocol.chat import ChatCompletionRequest, ChatCompletionResponse
from kaito_ragengine.routers.deps import chat_service
from kaito_ragengine.routers.errors import error_responses
from kaito_ragengine.serving.chat import ChatService

__all__ = ["router"]

router = APIRouter(tags=["chat"])


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        yield line + "\n"


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **error_responses(400, 404, 413, 422, 502, 503),
        "4XX": {"description": "The LLM's own 4xx, relayed with its status and message"},
    },
)
async def chat_completions(
    body: ChatCompletionRequest, chat: Annotated[ChatService, Depends(chat_service)]
) -> JSONResponse | StreamingResponse:
    """OpenAI chat completions; ``index_name`` grounds the answer in that index."""
    result = await chat.complete(body)
    if isinstance(result, dict):
        return JSONResponse(result)
    return StreamingResponse(_sse(result), media_type="text/event-stream")
