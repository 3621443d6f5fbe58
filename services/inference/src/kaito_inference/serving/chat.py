"""``/v1/chat/completions``: render the conversation, generate, shape chat objects."""

from __future__ import annotations

import asyncio
from typing import Any

from kaito_inference.protocol.chat import ChatCompletionRequest
from kaito_inference.serving.generation import Disconnected, GenerationService, Reply

__all__ = ["ChatService"]


class ChatService(GenerationService):
    """Chat completions: ``chat.completion`` objects, or ``chat.completion.chunk`` events."""

    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    async def create(self, body: ChatCompletionRequest, disconnected: Disconnected) -> Reply:
        """Answer ``body``.

        The chat template runs in a worker thread (the tokenizer releases the GIL), so a
        long prompt never stalls ``/health`` or the other streams.
        """
        adapter = self.models.adapter_for(body.model)
        ids = await asyncio.to_thread(self.engine.encode_chat, body.template_messages())
        return await self.reply(
            body,
            ids,
            adapter=adapter,
            max_tokens=body.token_limit(),
            prompt_param="messages",
            disconnected=disconnected,
        )

    def choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        """The assistant's message."""
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
            "logprobs": None,
        }

    def chunk_choice(self, text: str | None, finish_reason: str | None) -> dict[str, Any]:
        """A content delta; the closing chunk has an empty delta and the finish reason."""
        return {
            "index": 0,
            "delta": {} if text is None else {"content": text},
            "finish_reason": finish_reason,
            "logprobs": None,
        }

    def opening_chunk_choice(self) -> dict[str, Any]:
        """The first chunk names the assistant role, as OpenAI's does."""
        return {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
            "logprobs": None,
        }
