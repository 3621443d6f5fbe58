"""``GET /health`` and ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

__all__ = ["router"]

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    """KAITO's health body."""

    status: str = "Healthy"
    """Always ``Healthy`` once the app serves requests."""
    detail: str | None = None
    """Unused; kept for KAITO compatibility."""


@router.get("/health")
async def health() -> HealthResponse:
    """Liveness and readiness."""
    return HealthResponse()


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (``rag_*``)."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
