"""Between the routers and the engine: one service per endpoint group."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kaito_inference.engines.base import Engine
from kaito_inference.metrics import InferenceMetrics
from kaito_inference.serving.adapters import AdapterService
from kaito_inference.serving.chat import ChatService
from kaito_inference.serving.completions import CompletionService
from kaito_inference.serving.models import ServedModels

__all__ = [
    "AdapterService",
    "ChatService",
    "CompletionService",
    "ServedModels",
    "Services",
]


@dataclass(frozen=True)
class Services:
    """Every service of one app, built once over its engine."""

    models: ServedModels
    chat: ChatService
    completions: CompletionService
    adapters: AdapterService
    metrics: InferenceMetrics

    @classmethod
    def build(
        cls,
        engine: Engine,
        metrics: InferenceMetrics,
        *,
        runtime_lora: bool,
        lora_root: Path,
    ) -> Services:
        """The services over ``engine``; runtime adapters must lie under ``lora_root``."""
        models = ServedModels(engine)
        return cls(
            models=models,
            chat=ChatService(models, engine, metrics),
            completions=CompletionService(models, engine, metrics),
            adapters=AdapterService(engine, models, enabled=runtime_lora, allowed_root=lora_root),
            metrics=metrics,
        )
