"""``/v1/completions``: tokenize the prompt, generate, shape ``text_completion`` objects."""

from __future__ import annotations

import asyncio
from typing import Any

from kaito_inference.errors import InvalidValueError
from kaito_inference.protocol.completions import CompletionRequest
from kaito_inference.serving.generation import Disconnected, GenerationService, Reply

__all__ = ["CompletionService"]


class CompletionService(GenerationService):
    """Text completions: one prompt, one choice, streamed or whole."""

    object_name = "text_completion"
    chunk_object_name = "text_completion"
    id_prefix = "cmpl"

    async def create(self, body: CompletionRequest, disconnected: Disconnected) -> Reply:
        """Answer ``body`` (the prompt is tokenized in a worker thread)."""
        adapter = self.models.adapter_for(body.model)
        ids = await asyncio.to_thread(self.engine.encode_prompt, body.prompt_text())
        if not ids:
            raise InvalidValueError("prompt must not be empty", param="prompt")
        return await self.reply(
            body,
            ids,
            adapter=adapter,
            max_tokens=body.max_tokens,
            prompt_param="prompt",
            disconnected=disconnected,
        )

    def choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        """The generated text."""
        return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}

    def chunk_choice(self, text: str | None, finish_reason: str | None) -> dict[str, Any]:
        """A piece of text; the closing chunk has empty text and the finish reason."""
        return {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
