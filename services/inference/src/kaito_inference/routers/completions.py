"""``POST /v1/completions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from kaito_inference.protocol.completions import CompletionRequest
from kaito_inference.routers.deps import services
from kaito_inference.routers.responses import respond
from kaito_inference.serving import Services

__all__ = ["router"]

router = APIRouter(tags=["completions"])


@router.post("/v1/completions")
async def create_completion(
    body: CompletionRequest, request: Request, serving: Annotated[Services, Depends(services)]
) -> Response:
    """Continue a prompt (``stream: true`` answers with server-sent events)."""
    return respond(await serving.completions.create(body, request.is_disconnected))
