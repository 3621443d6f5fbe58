"""``GET /health`` and ``GET /metrics``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kaito_inference.routers.deps import services
from kaito_inference.serving import Services

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(serving: Annotated[Services, Depends(services)]) -> dict[str, str]:
    """200 once the model serves; 503 while it loads or after it failed to load."""
    serving.models.require_ready()
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(serving: Annotated[Services, Depends(services)]) -> Response:
    """The Prometheus metrics of this server."""
    return Response(generate_latest(serving.metrics.registry), media_type=CONTENT_TYPE_LATEST)
