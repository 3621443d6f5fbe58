"""``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter`` (vLLM's endpoints)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from kaito_inference.protocol.models import LoadLoraRequest, UnloadLoraRequest
from kaito_inference.routers.deps import services
from kaito_inference.serving import Services

__all__ = ["router"]

router = APIRouter(tags=["adapters"])


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(
    body: LoadLoraRequest, serving: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    """Serve the adapter at ``lora_path`` as the model ``lora_name``."""
    await serving.adapters.load(body.lora_name, body.lora_path)
    return {"status": "loaded", "lora_name": body.lora_name}


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(
    body: UnloadLoraRequest, serving: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    """Stop serving the adapter ``lora_name``."""
    await serving.adapters.unload(body.lora_name)
    return {"status": "unloaded", "lora_name": body.lora_name}
