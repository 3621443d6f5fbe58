"""One request's life inside the batcher: its sampling settings, its token events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["SamplingParams", "Sequence", "TokenEvent"]


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens. ``temperature == 0`` means greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class TokenEvent:
    """One generated token (or the end) for one sequence."""

    token_id: int | None
    finish_reason: str | None = None  # "stop" (end-of-sequence), "length", or "error"


@dataclass(eq=False)
class Sequence:
    """One request inside the batcher. ``events`` receives :class:`TokenEvent` items."""

    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    generated: int = 0
    length: int = 0  # real tokens in this sequence's KV cache
    last_token: int = 0
    cancelled: bool = False
    finished: bool = False
    generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Ask the batcher to drop this sequence at its next step (client went away, stop hit)."""
        self.cancelled = True

    def emit(self, event: TokenEvent) -> None:
        """Hand ``event`` to the request's event loop (called from the batcher thread)."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)
