"""The query micro-batcher: concurrent queries share embedding calls; errors reach callers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kaito_ragengine.embeddings.batching import QueryBatcher

from .conftest import hashing_vectors


class SlowEmbedder:
    """Takes 20 ms per call and records batch sizes."""

    model_id = "slow"

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        await asyncio.sleep(0.02)
        if self.fail_on in texts:
            raise RuntimeError("embedding backend failed")
        return hashing_vectors(texts)

    async def aclose(self) -> None:
        return None


@pytest.mark.asyncio
async def test_concurrent_queries_are_embedded_together() -> None:
    embedder = SlowEmbedder()
    sizes: list[int] = []
    batcher = QueryBatcher(embedder, max_batch=4, on_batch=sizes.append)
    texts = [f"query {i}" for i in range(9)]
    vectors = await asyncio.gather(*(batcher.embed(t) for t in texts))
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, hashing_vectors([text])[0])
    assert [len(b) for b in embedder.batches] == [4, 4, 1]  # all nine queued before the first call
    assert sizes == [4, 4, 1]
    assert sorted(t for b in embedder.batches for t in b) == sorted(texts)


@pytest.mark.asyncio
async def test_a_failed_batch_fails_its_callers_only() -> None:
    embedder = SlowEmbedder(fail_on="bad")
    batcher = QueryBatcher(embedder, max_batch=8)
    first = asyncio.create_task(batcher.embed("good first"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.embed(t)) for t in ("bad", "also in the bad batch")]
    assert (await first).shape == (64,)
    for task in rest:
        with pytest.raises(RuntimeError, match="backend failed"):
            await task
    assert (await batcher.embed("after")).shape == (64,)  # the batcher keeps working
