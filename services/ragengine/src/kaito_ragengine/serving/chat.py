"""ChatService: OpenAI chat completions, grounded in an index or passed through.

Pass-through (the body goes to the LLM unchanged, minus KAITO's RAG fields) when there
is no ``index_name``, when the request carries ``tools`` or ``functions``, or when a
message has a role or content the RAG path cannot read. Otherwise the trailing user
messages form the query, hybrid retrieval fills a token budget with chunks, and the
chunks go into a system message; ``stream`` works on both paths.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

from kaito_ragengine.errors import InvalidRequestError, ServiceUnavailableError
from kaito_ragengine.protocol.chat import ChatCompletionRequest
from kaito_ragengine.serving.llm import LLMClient
from kaito_ragengine.serving.rag import RagService

__all__ = ["CONTEXT_PROMPT", "ChatService", "estimate_tokens"]

RAG_ROLES = frozenset({"system", "developer", "user", "assistant"})
#: Tokens kept free for chat-template overhead when computing the context budget.
TEMPLATE_OVERHEAD = 150
CONTEXT_PROMPT = (
    "Answer the user's question using the context below. If the context does not contain "
    "the answer, say so.\n\nContext:\n{context}"
)


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (one token per 3 characters): no tokenizer download."""
    return math.ceil(len(text) / 3)


def _message_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(4 + estimate_tokens(str(m.get("content") or "")) for m in messages)


def _needs_passthrough(request: ChatCompletionRequest) -> bool:
    extra = request.model_extra or {}
    if request.index_name is None or extra.get("tools") or extra.get("functions"):
        return True
    return any(
        m.get("role") not in RAG_ROLES or not isinstance(m.get("content"), str)
        for m in request.messages
    )


def _split_query(messages: list[dict[str, Any]]) -> str:
    tail: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "user":
            break
        tail.append(str(message["content"]))
    query = "\n".join(reversed(tail)).strip()
    if not query:
        raise InvalidRequestError(
            "messages: the RAG path needs the conversation to end with a user message"
        )
    return query


class ChatService:
    """Answers chat completions through the LLM, with or without retrieved context."""

    def __init__(self, rag: RagService, llm: LLMClient | None) -> None:
        self.rag = rag
        self.llm = llm
        self.context_window = rag.settings.llm_context_window or 0
        self.min_similarity = rag.settings.chat_min_similarity

    async def complete(self, request: ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[str]:
        """A ChatCompletion dict, or SSE lines when ``request.stream``."""
        if self.llm is None:
            raise ServiceUnavailableError(
                "no LLM is configured (KAITO_RAG_LLM_INFERENCE_URL): this engine is retrieve-only"
            )
        body = request.llm_fields()
        if not body.get("model"):
            body["model"] = await self.llm.default_model()
        sources: list[dict[str, Any]] | None = None
        if not _needs_passthrough(request):
            assert request.index_name is not None
            body["messages"], sources = await self._ground(request)
        if request.stream:
            lines = await self.llm.stream(body)
            return lines if sources is None else self._with_sources(lines, sources)
        result = await self.llm.complete(body)
        if sources is not None:
            result["source_nodes"] = sources
        return result

    async def _ground(
        self, request: ChatCompletionRequest
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        assert request.index_name is not None
        self.rag.get(request.index_name)
        query = _split_query(request.messages)
        prompt_tokens = _message_tokens(request.messages)
        reserved = request.max_tokens or 0
        if prompt_tokens + reserved > self.context_window:
            raise InvalidRequestError(
                f"messages: about {prompt_tokens} prompt tokens plus max_tokens={reserved} "
                f"do not fit "
                f"the LLM's context window of {self.context_window} tokens"
            )
        budget = int(
            (self.context_window - prompt_tokens - reserved - TEMPLATE_OVERHEAD)
            * request.context_token_ratio
        )
        if budget <= 0:
            return list(request.messages), []
        k = max(1, min(self.rag.settings.max_top_k, budget // 64))
        results = await self.rag.retrieve(request.index_name, query, k)
        chosen: list[dict[str, Any]] = []
        for result in results:
            cost = estimate_tokens(result["text"]) + 4
            if result["dense_score"] >= self.min_similarity and cost <= budget:
                chosen.append(result)
                budget -= cost
        if not chosen:
            return list(request.messages), []
        context = "\n\n---\n\n".join(r["text"] for r in chosen)
        messages = [dict(m) for m in request.messages]
        prompt = CONTEXT_PROMPT.format(context=context)
        if messages[0].get("role") == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n\n{prompt}"
        else:
            messages.insert(0, {"role": "system", "content": prompt})
        sources = [
            {k: r[k] for k in ("doc_id", "node_id", "text", "score", "metadata")} for r in chosen
        ]
        return messages, sources

    @staticmethod
    async def _with_sources(
        lines: AsyncIterator[str], sources: list[dict[str, Any]]
    ) -> AsyncIterator[str]:
        """Relay SSE lines, adding ``source_nodes`` to the first data chunk."""
        pending = True
        async for line in lines:
            if pending and line.startswith("data:") and line[5:].strip() != "[DONE]":
                try:
                    chunk = json.loads(line[5:])
                except ValueError:
                    yield line
                    continue
                chunk["source_nodes"] = sources
                pending = False
                yield "data: " + json.dumps(chunk)
                continue
            yield line
