"""``GET /v1/models`` and the LoRA load/unload bodies (vLLM's shapes)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from kaito_inference.protocol.common import StrictRequest

__all__ = ["AdapterName", "LoadLoraRequest", "ModelCard", "ModelList", "UnloadLoraRequest"]

#: Names an adapter may be served under (also a safe directory and env var name).
AdapterName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "kaito"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoadLoraRequest(StrictRequest):
    """``POST /v1/load_lora_adapter`` (vLLM's shape)."""

    lora_name: AdapterName
    lora_path: str = Field(min_length=1)


class UnloadLoraRequest(StrictRequest):
    """``POST /v1/unload_lora_adapter``."""

    lora_name: AdapterName
    lora_int_id: int | None = None
