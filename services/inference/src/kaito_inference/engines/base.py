"""The small protocol every engine implements, and the values passed across it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["AdapterInfo", "Engine", "GenerationParams", "QueueFullError", "TextDelta"]


class QueueFullError(RuntimeError):
    """The waiting queue is at its limit; the server answers 429."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling and stopping for one request."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TextDelta:
    """A piece of generated text; the last one carries ``finish_reason`` and the token count."""

    text: str
    finish_reason: str | None = None  # "stop" or "length" on the last delta
    completion_tokens: int = 0


@dataclass(frozen=True)
class AdapterInfo:
    """A LoRA adapter the engine serves as its own model name."""

    name: str
    path: Path
    strength: float = 1.0


class Engine(Protocol):
    """What the OpenAI routers need from a runtime."""

    @property
    def ready(self) -> bool:
        """True once the model is loaded and requests can be served."""

    @property
    def load_error(self) -> BaseException | None:
        """Why the model could not be loaded (``None`` while loading or once ready)."""

    @property
    def base_model(self) -> str:
        """The served name of the base model."""

    @property
    def max_model_len(self) -> int:
        """Prompt plus completion tokens one request may use."""

    def start(self) -> None:
        """Begin loading (in the background); ``ready`` turns true when done."""

    def stop(self) -> None:
        """Release the model and stop background work."""

    def adapters(self) -> list[AdapterInfo]:
        """Adapters currently served."""

    def queue_depth(self) -> tuple[int, int]:
        """Sequences (running, waiting) right now; (0, 0) while loading."""

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered through the chat template (generation prompt on)."""

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a plain completion prompt."""

    def generate(
        self, prompt_ids: list[int], params: GenerationParams, *, adapter: str | None
    ) -> AsyncGenerator[TextDelta, None]:
        """Stream the completion; closing the iterator early cancels the generation.

        Raises :class:`QueueFullError` (at the first ``anext``) when the
        waiting queue is full.
        """

    def load_adapter(self, name: str, path: Path) -> AdapterInfo:
        """Load an adapter at runtime (already validated) and serve it as ``name``."""

    def unload_adapter(self, name: str) -> None:
        """Stop serving adapter ``name``."""
