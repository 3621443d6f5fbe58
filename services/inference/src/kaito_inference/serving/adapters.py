"""Runtime LoRA loading and unloading (``/v1/load_lora_adapter``, vLLM's endpoints)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kaito_inference.engines.adapters import AdapterError, check_adapter_path
from kaito_inference.engines.base import Engine
from kaito_inference.errors import (
    AdapterBusyError,
    AlreadyServedError,
    FeatureDisabledError,
    InvalidValueError,
    ModelNotFoundError,
)
from kaito_inference.serving.models import ServedModels

__all__ = ["AdapterService"]


class AdapterService:
    """Checks runtime adapter requests, then loads or unloads them in a worker thread."""

    def __init__(
        self, engine: Engine, models: ServedModels, *, enabled: bool, allowed_root: Path
    ) -> None:
        self.engine = engine
        self.models = models
        self.enabled = enabled
        self.allowed_root = allowed_root

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise FeatureDisabledError(
                "runtime LoRA loading is disabled; set "
                "KAITO_INFERENCE_ENABLE_LORA_RUNTIME_LOADING=true to enable it"
            )
        self.models.require_ready()

    async def load(self, name: str, raw_path: str) -> None:
        """Serve the adapter at ``raw_path`` as ``name``: it must lie under the allowed root
        and hold a PEFT adapter, and ``name`` must be free."""
        self._require_enabled()
        if self.models.is_served(name):
            raise AlreadyServedError(f"a model named {name!r} is already served", param="lora_name")
        try:
            path = check_adapter_path(name, raw_path, self.allowed_root)
        except AdapterError as exc:
            raise InvalidValueError(str(exc), param="lora_path") from None
        await asyncio.to_thread(self.engine.load_adapter, name, path)

    async def unload(self, name: str) -> None:
        """Stop serving adapter ``name`` (409 while requests use it)."""
        self._require_enabled()
        if name not in self.models.adapter_names():
            raise ModelNotFoundError(f"no adapter named {name!r} is loaded", param="lora_name")
        try:
            await asyncio.to_thread(self.engine.unload_adapter, name)
        except AdapterError as exc:
            raise AdapterBusyError(str(exc), param="lora_name") from None
