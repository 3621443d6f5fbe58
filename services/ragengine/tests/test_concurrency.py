"""Indexing, updating and deleting while queries run: no errors, consistent answers, no lost
acknowledged write (also across a restart)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
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


@pytest.mark.asyncio
async def test_eight_writers_and_eight_readers_lose_no_acknowledged_write(tmp_path: Path) -> None:
    """Every write that got a 200 is served, and is still there after a shutdown and restart."""
    settings = make_settings(tmp_path)  # snapshot on shutdown, restore on start
    acknowledged: set[str] = set()
    deleted: set[str] = set()
    failures: list[str] = []
    async with running_app(create_app(settings, embedder=HashingEmbedder())) as client:
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            for batch in range(10):
                docs = [{"text": f"writer {w} batch {batch} item {i}"} for i in range(8)]
                response = await client.post("/index", json={"index_name": "w", "documents": docs})
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                ids = [d["doc_id"] for d in response.json()]
                acknowledged.update(ids)
                if batch % 3 == 2:
                    gone = await client.post(
                        "/indexes/w/documents/delete", json={"doc_ids": ids[:2]}
                    )
                    deleted.update(gone.json()["deleted_doc_ids"])
                if batch == 5:
                    await client.post("/persist/w")

        async def reader() -> None:
            while not stop.is_set():
                response = await client.post(
                    "/retrieve", json={"index_name": "w", "query": "writer batch item"}
                )
                if response.status_code not in {200, 404}:  # 404 until the first write lands
                    failures.append(response.text)
                await asyncio.sleep(0)

        readers = [asyncio.create_task(reader()) for _ in range(8)]
        await asyncio.gather(*(writer(w) for w in range(8)))
        stop.set()
        await asyncio.gather(*readers)
        assert not failures, failures[:3]
        expected = acknowledged - deleted
        assert len(expected) == 8 * 10 * 8 - len(deleted)
        live = await _all_ids(client)
        assert live == expected
    async with running_app(create_app(settings, embedder=HashingEmbedder())) as client:
        assert await _all_ids(client) == expected


async def _all_ids(client: httpx.AsyncClient) -> set[str]:
    ids: set[str] = set()
    offset = 0
    while True:
        page = await client.get(
            "/indexes/w/documents", params={"limit": 100, "offset": offset, "max_text_length": 1}
        )
        documents = page.json()["documents"]
        ids.update(d["doc_id"] for d in documents)
        if len(documents) < 100:
            return ids
        offset += 100
