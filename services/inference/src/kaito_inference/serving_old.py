"""Between the routers and the engine: validation, generation, usage, SSE and metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from kaito_inference.engines.base import Engine, GenerationParams, QueueFullError, TextDelta
from kaito_inference.errors import OpenAIError
from kaito_inference.metrics import InferenceMetrics
from kaito_inference.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    Usage,
    new_id,
)

__all__ = ["Completion", "OpenAIServing"]

DISCONNECT_POLL_S = 0.5


@dataclass
class Completion:
    """One prepared request: what to generate and how to shape the answer."""

    kind: str  # "chat" or "text"
    model: str
    adapter: str | None
    prompt_ids: list[int]
    params: GenerationParams
    stream: bool
    include_usage: bool
    id: str
    created: int


class OpenAIServing:
    """Turns validated OpenAI requests into engine calls and OpenAI responses."""

    def __init__(self, engine: Engine, metrics: InferenceMetrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def require_ready(self) -> None:
        """503 while the model is loading (or after it failed to load)."""
        if not self.engine.ready:
            failure = getattr(self.engine, "load_error", None)
            if failure is not None:
                message = f"the model failed to load: {failure}"
                raise OpenAIError(503, message, code="model_load_failed")
            raise OpenAIError(503, "the model is still loading", code="model_not_ready")

    def adapter_for(self, model: str) -> str | None:
        """``None`` for the base model, the adapter name for an adapter, else 404."""
        if model == self.engine.base_model:
            return None
        if model in {a.name for a in self.engine.adapters()}:
            return model
        raise OpenAIError(
            404, f"the model {model!r} does not exist", param="model", code="model_not_found"
        )

    async def prepare_chat(self, body: ChatCompletionRequest) -> Completion:
        """Validate a chat request against the model and build its :class:`Completion`.

        Tokenizing runs in a worker thread (the tokenizer releases the GIL), so a long
        prompt never stalls ``/health`` or the other streams.
        """
        self.require_ready()
        adapter = self.adapter_for(body.model)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        ids = await asyncio.to_thread(self.engine.encode_chat, messages)
        return self._prepare(
            kind="chat",
            body=body,
            adapter=adapter,
            ids=ids,
            max_tokens=body.token_limit(),
            prompt_param="messages",
        )

    async def prepare_text(self, body: CompletionRequest) -> Completion:
        """Validate a completion request and build its :class:`Completion` (tokenized in a
        worker thread)."""
        self.require_ready()
        adapter = self.adapter_for(body.model)
        ids = await asyncio.to_thread(self.engine.encode_prompt, body.prompt_text())
        if not ids:
            raise OpenAIError(400, "prompt must not be empty", param="prompt", code="invalid_value")
        return self._prepare(
            kind="text",
            body=body,
            adapter=adapter,
            ids=ids,
            max_tokens=body.max_tokens,
            prompt_param="prompt",
        )

    def _prepare(
        self,
        *,
        kind: str,
        body: ChatCompletionRequest | CompletionRequest,
        adapter: str | None,
        ids: list[int],
        max_tokens: int | None,
        prompt_param: str,
    ) -> Completion:
        limit = self.engine.max_model_len
        room = limit - len(ids)
        if room <= 0:
            raise OpenAIError(
                400,
                f"the prompt has {len(ids)} tokens; this model's context is {limit} tokens",
                param=prompt_param,
                code="context_length_exceeded",
            )
        if max_tokens is not None and max_tokens > room:
            raise OpenAIError(
                400,
                f"max_tokens {max_tokens} plus the prompt's {len(ids)} tokens exceeds this "
                f"model's context of {limit} tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        params = GenerationParams(
            max_tokens=max_tokens or room,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=body.stop_list(),
        )
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return Completion(
            kind,
            body.model,
            adapter,
            ids,
            params,
            body.stream,
            body.include_usage(),
            new_id(prefix),
            int(time.time()),
        )

    async def _deltas(self, job: Completion) -> AsyncGenerator[TextDelta, None]:
        """The engine's deltas with metrics; 429 when the queue is full.

        A finished request is counted before its last delta is yielded: a stream's reader
        stops at that delta and closes this generator, so code after the yield never runs.
        """
        arrived = time.monotonic()
        try:
            stream = self.engine.generate(job.prompt_ids, job.params, adapter=job.adapter)
            first = await anext(stream)
        except QueueFullError as exc:
            self.metrics.rejected.inc()
            raise OpenAIError(
                429, f"too many requests: {exc}; retry later", code="rate_limit_exceeded"
            ) from None
        self.metrics.prompt_tokens.inc(len(job.prompt_ids))
        self.metrics.time_to_first_token.observe(time.monotonic() - arrived)
        delta = first
        try:
            while True:
                if delta.finish_reason is not None:
                    self.metrics.generation_tokens.inc(delta.completion_tokens)
                    self.metrics.e2e_latency.observe(time.monotonic() - arrived)
                    self.metrics.requests.labels(job.model, delta.finish_reason).inc()
                    yield delta
                    return
                yield delta
                delta = await anext(stream)
        finally:
            await stream.aclose()

    async def complete(self, job: Completion, request: Request) -> dict[str, Any]:
        """Run a non-streaming request, cancelling it if the client goes away."""
        task = asyncio.ensure_future(self._collect(job))
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not done and await request.is_disconnected():
                task.cancel()
                raise OpenAIError(400, "client disconnected")
        return task.result()

    async def _collect(self, job: Completion) -> dict[str, Any]:
        parts: list[str] = []
        last = TextDelta("")
        async for delta in self._deltas(job):
            parts.append(delta.text)
            last = delta
        text = "".join(parts)
        usage = _usage(job, last.completion_tokens)
        if job.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": last.finish_reason,
                "logprobs": None,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "finish_reason": last.finish_reason,
                "logprobs": None,
            }
            obj = "text_completion"
        return {
            "id": job.id,
            "object": obj,
            "created": job.created,
            "model": job.model,
            "choices": [choice],
            "usage": usage.model_dump(),
        }

    async def open_stream(self, job: Completion) -> AsyncIterator[str]:
        """Start generating (so 429 happens before the response starts) and return the SSE."""
        deltas = self._deltas(job)
        first = await anext(deltas)  # raises OpenAIError(429) before any byte is sent
        return self._sse(job, first, deltas)

    async def _sse(
        self, job: Completion, first: TextDelta, deltas: AsyncGenerator[TextDelta, None]
    ) -> AsyncIterator[str]:
        chunk = _chunker(job)
        try:
            if job.kind == "chat":
                yield _event(chunk({"role": "assistant", "content": ""}, None))
            delta: TextDelta | None = first
            while delta is not None:
                if delta.text:
                    yield _event(
                        chunk({"content": delta.text} if job.kind == "chat" else delta.text, None)
                    )
                if delta.finish_reason is not None:
                    yield _event(chunk({} if job.kind == "chat" else "", delta.finish_reason))
                    if job.include_usage:
                        usage = _usage(job, delta.completion_tokens).model_dump()
                        yield _event({**chunk(None, None), "choices": [], "usage": usage})
                    break
                delta = await anext(deltas, None)
            yield "data: [DONE]\n\n"
        finally:
            await deltas.aclose()


def _usage(job: Completion, completion_tokens: int) -> Usage:
    prompt = len(job.prompt_ids)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion_tokens,
        total_tokens=prompt + completion_tokens,
    )


def _chunker(job: Completion) -> Callable[[Any, str | None], dict[str, Any]]:
    obj = "chat.completion.chunk" if job.kind == "chat" else "text_completion"

    def chunk(content: Any, finish_reason: str | None) -> dict[str, Any]:
        if job.kind == "chat":
            choice = {
                "index": 0,
                "delta": content or {},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        else:
            choice = {
                "index": 0,
                "text": content or "",
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        return {
            "id": job.id,
            "object": obj,
            "created": job.created,
            "model": job.model,
            "choices": [choice],
        }

    return chunk


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
