"""Indexing, updating and deleting while queries run: no errors, consistent answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kaito_ragengine.app import create_app

from .conftest import HashingEmbedder, make_settings, running_app


@pytest.mark.asyncio
async def test_concurrent_indexing_while_querying(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    app = create_app(make_settings(tmp_path, snapshot_on_shutdown=False), embedder=embedder)
    async with running_app(app) as client:
        await client.post(
            "/index", json={"index_name": "c", "documents": [{"text": "anchor document zebra"}]}
        )
        stop = asyncio.Event()
        failures: list[str] = []

        async def writer(w: int) -> None:
            for batch in range(15):
                docs = [{"text": f"writer {w} batch {batch} item {i} words"} for i in range(20)]
                response = await client.post("/index", json={"index_name": "c", "documents": docs})
                if response.status_code != 200:
                    failures.append(response.text)
                if batch % 5 == 4:
                    ids = [d["doc_id"] for d in response.json()[:5]]
                    await client.post("/indexes/c/documents/delete", json={"doc_ids": ids})
                    await client.post("/persist/c")

        async def reader() -> int:
            count = 0
            while not stop.is_set():
                response = await client.post(
                    "/retrieve",
                    json={"index_name": "c", "query": "zebra anchor", "max_node_count": 5},
                )
                body = response.json()
                if (
                    response.status_code != 200
                    or body["results"][0]["text"] != "anchor document zebra"
                ):
                    failures.append(response.text)
                for result in body["results"]:
                    if not result["text"]:
                        failures.append(f"empty chunk {result}")
                count += 1
            return count

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        await asyncio.gather(*(writer(w) for w in range(3)))
        stop.set()
        queries = sum(await asyncio.gather(*readers))
        assert not failures, failures[:3]
        assert queries > 20
        listing = (await client.get("/indexes/c/documents", params={"limit": 1})).json()
        assert listing["total_items"] == 1 + 3 * (15 * 20 - 3 * 5)
        index = app.state.rag.indexes["c"]
        assert len(index.vectors) == len(index.nodes) == len(index.bm25)
