"""``POST /v1/chat/completions`` wire models (OpenAI's shape plus KAITO's RAG fields)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from kaito_ragengine.protocol.documents import IndexName, MetadataValue, refuse_invalid_json

__all__ = ["ChatCompletionRequest", "ChatCompletionResponse", "SourceNode"]


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat completion request; unknown OpenAI fields are forwarded unchanged."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    """The conversation, OpenAI format."""
    model: str | None = None
    """Model name at the LLM; the LLM's first model when omitted."""
    stream: StrictBool = False
    """Stream server-sent events (on the RAG path too)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Most tokens to generate; also reserved out of the context budget."""
    index_name: IndexName | None = None
    """Index to ground the answer in; without it the request passes through to the LLM."""
    context_token_ratio: float = Field(default=0.5, ge=0.2, le=0.8)
    """Share of the free context window filled with retrieved chunks."""

    @model_validator(mode="before")
    @classmethod
    def _json_only(cls, data: Any) -> Any:
        """Refuse NaN, Infinity and lone surrogates anywhere: the body goes on to the LLM."""
        if isinstance(data, dict):
            for key, value in data.items():
                refuse_invalid_json(value, str(key))
        return data

    def llm_fields(self) -> dict[str, Any]:
        """The body to send to the LLM: every field except the RAG-only ones."""
        body = self.model_dump(exclude={"index_name", "context_token_ratio"}, exclude_none=True)
        if not self.stream:
            body.pop("stream", None)
        return body


class SourceNode(BaseModel):
    """A chunk that was put into the LLM's context."""

    doc_id: str
    """The document the chunk belongs to."""
    node_id: str
    """The chunk id."""
    text: str
    """The chunk text."""
    score: float
    """Relevance of the chunk in [0, 1], as ``score`` in ``/retrieve`` (higher is more
    relevant)."""
    metadata: dict[str, MetadataValue]
    """The document's metadata."""


class ChatCompletionResponse(BaseModel):
    """The LLM's ChatCompletion, plus ``source_nodes`` on the RAG path."""

    model_config = ConfigDict(extra="allow")

    id: str
    """Completion id, from the LLM."""
    object: str = "chat.completion"
    """Always ``chat.completion``."""
    choices: list[dict[str, Any]]
    """The LLM's choices."""
    usage: dict[str, Any] | None = None
    """Token usage counted by the LLM (context included)."""
    source_nodes: list[SourceNode] | None = None
    """Chunks given to the LLM as context (RAG path only)."""
