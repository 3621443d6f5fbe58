"""A deterministic engine without a model, for router, protocol and cross-service tests.

Its tokens are the UTF-8 bytes of the text. Its completion echoes the prompt back, one
byte per token, and then stops (``finish_reason`` ``"stop"``), unless ``max_tokens``
ends it first (``"length"``). With ``temperature > 0`` the echo starts at a word chosen
by ``seed`` and wraps around (any start when there is no seed), so seeded sampling
repeats and different seeds differ. An adapter's completion is upper-cased, so adapters
change the answer and the base model's does not change. Stop strings are cut with the
same :class:`IncrementalText` the transformers engine uses. It needs no torch and starts
in microseconds; ``load_delay_s`` and ``load_failure`` reproduce a loading or broken
model, ``token_delay_s`` a slow one, and ``max_running``/``max_waiting`` a full queue.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from collections import Counter
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path

from kaito_inference.engines.adapters import AdapterError
from kaito_inference.engines.base import AdapterInfo, GenerationParams, QueueFullError, TextDelta
from kaito_inference.engines.text import IncrementalText

__all__ = ["ByteTokenizer", "FakeEngine", "FakeLoadError"]


class FakeLoadError(RuntimeError):
    """The failure a :class:`FakeEngine` built with ``load_failure`` reports."""


class ByteTokenizer:
    """UTF-8 bytes as token ids (the ``decode`` that :class:`IncrementalText` needs)."""

    @staticmethod
    def encode(text: str) -> list[int]:
        """The bytes of ``text``."""
        return list(text.encode())

    @staticmethod
    def decode(ids: list[int], skip_special_tokens: bool = True) -> str:
        """The text of ``ids``; an incomplete character at the end decodes as U+FFFD."""
        return bytes(ids).decode(errors="replace")


class FakeEngine:
    """An echo engine implementing :class:`~kaito_inference.engines.base.Engine`."""

    def __init__(
        self,
        *,
        model: str = "fake-model",
        max_model_len: int = 2048,
        adapters: Iterable[str] = (),
        max_running: int = 16,
        max_waiting: int = 64,
        token_delay_s: float = 0.0,
        load_delay_s: float = 0.0,
        load_failure: str | None = None,
    ) -> None:
        self.tokenizer = ByteTokenizer()
        self._base_model = model
        self._max_model_len = max_model_len
        self._adapters = {
            name: AdapterInfo(name, Path("/fake-adapters") / name) for name in adapters
        }
        self._capacity = max_running + max_waiting
        self._max_running = max_running
        self._token_delay_s = token_delay_s
        self._load_delay_s = load_delay_s
        self._load_failure = load_failure
        self._ready = threading.Event()
        self._in_flight: Counter[str | None] = Counter()
        self._timer: threading.Timer | None = None
        self.load_error: BaseException | None = None
        self.started = False
        self.stopped = False

    @property
    def ready(self) -> bool:
        """True once the (pretend) load is over without a failure."""
        return self._ready.is_set()

    @property
    def base_model(self) -> str:
        """The served name of the base model."""
        return self._base_model

    @property
    def max_model_len(self) -> int:
        """Prompt plus completion bytes one request may use."""
        return self._max_model_len

    def start(self) -> None:
        """Become ready (or fail) after ``load_delay_s``."""
        self.started = True
        self._timer = threading.Timer(self._load_delay_s, self._finish_loading)
        self._timer.daemon = True
        self._timer.start()

    def _finish_loading(self) -> None:
        if self._load_failure is not None:
            self.load_error = FakeLoadError(self._load_failure)
        else:
            self._ready.set()

    def stop(self) -> None:
        """Cancel a pending load."""
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def adapters(self) -> list[AdapterInfo]:
        """Adapters currently served."""
        return list(self._adapters.values())

    def queue_depth(self) -> tuple[int, int]:
        """Requests generating now, as (running, waiting) under ``max_running``."""
        total = sum(self._in_flight.values())
        return min(total, self._max_running), max(0, total - self._max_running)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The bytes of ``role: content`` lines, ending with ``assistant:``."""
        lines = [f"{m['role']}: {m['content']}\n" for m in messages]
        return self.tokenizer.encode("".join(lines) + "assistant:")

    def encode_prompt(self, prompt: str) -> list[int]:
        """The bytes of ``prompt``."""
        return self.tokenizer.encode(prompt)

    def completion_for(
        self, prompt_ids: list[int], params: GenerationParams, adapter: str | None
    ) -> str:
        """The whole text this engine generates for a prompt before any stop or limit."""
        text = self.tokenizer.decode(prompt_ids)
        if params.temperature > 0:
            starts = [0] + [m.end() for m in re.finditer(r"\s+", text) if m.end() < len(text)]
            start = random.Random(params.seed).choice(starts)  # noqa: S311 (not crypto)
            if start:
                text = f"{text[start:]} {text[:start].rstrip()}"
        return text.upper() if adapter is not None else text

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, *, adapter: str | None
    ) -> AsyncGenerator[TextDelta, None]:
        """Stream the echo; :class:`QueueFullError` at the first ``anext`` when full."""
        if sum(self._in_flight.values()) >= self._capacity:
            raise QueueFullError(f"{self._capacity} requests in flight")
        self._in_flight[adapter] += 1
        tokens = self.tokenizer.encode(self.completion_for(prompt_ids, params, adapter))
        text = IncrementalText(self.tokenizer, params.stop)
        try:
            count = 0
            for token in tokens[: params.max_tokens]:
                await asyncio.sleep(self._token_delay_s)
                count += 1
                delta = text.push(token)
                if text.stopped:
                    yield TextDelta(delta, "stop", count)
                    return
                if delta:
                    yield TextDelta(delta, None, count)
            reason = "length" if count == params.max_tokens and count < len(tokens) else "stop"
            yield TextDelta(text.flush(), reason, count)
        finally:
            self._in_flight[adapter] -= 1

    def load_adapter(self, name: str, path: Path) -> AdapterInfo:
        """Serve ``name`` (its completions are upper-cased)."""
        self._adapters[name] = AdapterInfo(name, path)
        return self._adapters[name]

    def unload_adapter(self, name: str) -> None:
        """Stop serving ``name``; :class:`AdapterError` while requests use it."""
        if self._in_flight[name]:
            raise AdapterError(f"adapter {name!r} has requests in flight; retry when done")
        del self._adapters[name]
