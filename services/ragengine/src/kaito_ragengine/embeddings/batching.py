"""Micro-batching of concurrent query embeddings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from kaito_ragengine.embeddings.base import Embedder

__all__ = ["QueryBatcher"]


class QueryBatcher:
    """Collects queries that arrive while a batch is being embedded into the next batch.

    No timer: the first query is embedded at once, and every query that arrives during
    that call joins the following one (up to ``max_batch``), so latency never waits on a
    window and throughput grows with concurrency. ``on_batch`` is told each batch's size.
    """

    def __init__(
        self,
        embedder: Embedder,
        max_batch: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._embedder = embedder
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, text: str) -> np.ndarray:
        """The normalised embedding of one query."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = (
                self._pending[: self._max_batch],
                self._pending[self._max_batch :],
            )
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                matrix = await self._embedder.embed([text for text, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for row, (_, future) in zip(matrix, batch, strict=True):
                if not future.done():
                    future.set_result(row)
