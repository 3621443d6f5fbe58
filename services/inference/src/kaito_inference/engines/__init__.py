"""Engines behind the OpenAI surface: the transformers engine (continuous batching)."""

from kaito_inference.engines.base import Engine, GenerationParams, TextDelta

__all__ = ["Engine", "GenerationParams", "TextDelta"]
