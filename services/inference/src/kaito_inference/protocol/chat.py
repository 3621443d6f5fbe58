"""``POST /v1/chat/completions``: the request model (responses are shaped in serving)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kaito_inference.protocol.common import SamplingRequest, StrictRequest, require_unicode

__all__ = ["ChatCompletionRequest", "ChatMessage", "TextPart"]


class TextPart(StrictRequest):
    """A text content part of a chat message."""

    type: Literal["text"]
    text: str


class ChatMessage(StrictRequest):
    """One chat message; content is a string or a list of text parts."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _unicode_content(cls, value: str | list[TextPart]) -> str | list[TextPart]:
        require_unicode([value] if isinstance(value, str) else [part.text for part in value])
        return value

    def text(self) -> str:
        """The message content as one string."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool) -> bool:
        if value:
            raise ValueError("logprobs are not supported")
        return value

    def token_limit(self) -> int | None:
        """``max_completion_tokens`` or ``max_tokens`` (the newer name wins)."""
        return self.max_completion_tokens or self.max_tokens

    def template_messages(self) -> list[dict[str, str]]:
        """The messages as the chat template takes them (``developer`` is a system turn)."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]
