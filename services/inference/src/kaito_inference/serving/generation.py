"""What chat and text completions share: context checks, the engine call with its metrics,
non-streamed collection (cancelled when the client leaves) and the SSE stream."""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kaito_inference.engines.base import Engine, GenerationParams, QueueFullError, TextDelta
from kaito_inference.errors import (
    ClientDisconnectedError,
    ContextLengthError,
    TooManyRequestsError,
)
from kaito_inference.metrics import InferenceMetrics
from kaito_inference.protocol.common import SamplingRequest, Usage, new_id
from kaito_inference.serving.models import ServedModels

__all__ = [
    "DISCONNECT_POLL_S",
    "Disconnected",
    "GenerationJob",
    "GenerationService",
    "Reply",
    "sse_event",
]

DISCONNECT_POLL_S = 0.5
#: The last line of every SSE stream.
SSE_DONE = "data: [DONE]\n\n"

#: ``request.is_disconnected``: whether the client has gone away.
Disconnected = Callable[[], Awaitable[bool]]
#: A whole response body, or the SSE lines of a streamed one.
Reply = dict[str, Any] | AsyncIterator[str]


@dataclass(frozen=True)
class GenerationJob:
    """One prepared request: what to generate and how to shape the answer."""

    model: str
    adapter: str | None
    prompt_ids: list[int]
    params: GenerationParams
    stream: bool
    include_usage: bool
    id: str
    created: int

    def usage(self, completion_tokens: int) -> Usage:
        """Token counts once ``completion_tokens`` were generated."""
        prompt = len(self.prompt_ids)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion_tokens,
            total_tokens=prompt + completion_tokens,
        )


def sse_event(payload: dict[str, Any]) -> str:
    """One server-sent event carrying ``payload`` as compact JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class GenerationService(ABC):
    """Turns a validated request into engine calls and an OpenAI response.

    Subclasses tokenize their request and shape their objects; this class checks the
    context, runs the engine with metrics and 429s, and streams or collects the answer.
    """

    #: ``object`` of a whole response and of a stream chunk, and the id prefix.
    object_name: str
    chunk_object_name: str
    id_prefix: str

    def __init__(self, models: ServedModels, engine: Engine, metrics: InferenceMetrics) -> None:
        self.models = models
        self.engine = engine
        self.metrics = metrics

    @abstractmethod
    def choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        """The ``choices[0]`` of a whole response."""

    @abstractmethod
    def chunk_choice(self, text: str | None, finish_reason: str | None) -> dict[str, Any]:
        """The ``choices[0]`` of a stream chunk (``text`` ``None``: the closing chunk)."""

    def opening_chunk_choice(self) -> dict[str, Any] | None:
        """The choice of a first chunk sent before any text (none by default)."""
        return None

    async def reply(
        self,
        body: SamplingRequest,
        prompt_ids: list[int],
        *,
        adapter: str | None,
        max_tokens: int | None,
        prompt_param: str,
        disconnected: Disconnected,
    ) -> Reply:
        """The response body, or its SSE lines when ``body.stream``."""
        job = self.plan(body, prompt_ids, adapter, max_tokens, prompt_param)
        if job.stream:
            deltas = self._deltas(job)
            first = await anext(deltas)  # a 429 happens here, before any byte is sent
            return self._sse(job, first, deltas)
        return await self._complete(job, disconnected)

    def plan(
        self,
        body: SamplingRequest,
        ids: list[int],
        adapter: str | None,
        max_tokens: int | None,
        prompt_param: str,
    ) -> GenerationJob:
        """Check the prompt and ``max_tokens`` against the context; build the job."""
        limit = self.engine.max_model_len
        room = limit - len(ids)
        if room <= 0:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens; this model's context is {limit} tokens",
                param=prompt_param,
            )
        if max_tokens is not None and max_tokens > room:
            raise ContextLengthError(
                f"max_tokens {max_tokens} plus the prompt's {len(ids)} tokens exceeds this "
                f"model's context of {limit} tokens",
                param="max_tokens",
            )
        params = GenerationParams(
            max_tokens=max_tokens or room,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=body.stop_list(),
        )
        return GenerationJob(
            model=body.model,
            adapter=adapter,
            prompt_ids=ids,
            params=params,
            stream=body.stream,
            include_usage=body.include_usage(),
            id=new_id(self.id_prefix),
            created=int(time.time()),
        )

    async def _deltas(self, job: GenerationJob) -> AsyncGenerator[TextDelta, None]:
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
            raise TooManyRequestsError(f"too many requests: {exc}; retry later") from None
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

    async def _complete(self, job: GenerationJob, disconnected: Disconnected) -> dict[str, Any]:
        """Run a non-streamed request, cancelling it if the client goes away."""
        task = asyncio.ensure_future(self._collect(job))
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not done and await disconnected():
                task.cancel()
                raise ClientDisconnectedError("client disconnected")
        return task.result()

    async def _collect(self, job: GenerationJob) -> dict[str, Any]:
        parts: list[str] = []
        last = TextDelta("")
        async for delta in self._deltas(job):
            parts.append(delta.text)
            last = delta
        return {
            "id": job.id,
            "object": self.object_name,
            "created": job.created,
            "model": job.model,
            "choices": [self.choice("".join(parts), last.finish_reason)],
            "usage": job.usage(last.completion_tokens).model_dump(),
        }

    def _chunk(self, job: GenerationJob, choice: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": job.id,
            "object": self.chunk_object_name,
            "created": job.created,
            "model": job.model,
            "choices": [] if choice is None else [choice],
        }

    async def _sse(
        self, job: GenerationJob, first: TextDelta, deltas: AsyncGenerator[TextDelta, None]
    ) -> AsyncIterator[str]:
        try:
            opening = self.opening_chunk_choice()
            if opening is not None:
                yield sse_event(self._chunk(job, opening))
            delta: TextDelta | None = first
            while delta is not None:
                if delta.text:
                    yield sse_event(self._chunk(job, self.chunk_choice(delta.text, None)))
                if delta.finish_reason is not None:
                    closing = self.chunk_choice(None, delta.finish_reason)
                    yield sse_event(self._chunk(job, closing))
                    if job.include_usage:
                        usage = job.usage(delta.completion_tokens).model_dump()
                        yield sse_event({**self._chunk(job, None), "usage": usage})
                    break
                delta = await anext(deltas, None)
            yield SSE_DONE
        finally:
            await deltas.aclose()
