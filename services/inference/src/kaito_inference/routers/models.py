"""``GET /v1/models``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from kaito_inference.protocol.models import ModelList
from kaito_inference.routers.deps import services
from kaito_inference.serving import Services

__all__ = ["router"]

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(serving: Annotated[Services, Depends(services)]) -> ModelList:
    """The base model, then each adapter served as its own model."""
    return serving.models.model_list()
