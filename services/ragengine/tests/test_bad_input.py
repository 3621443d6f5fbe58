"""Bad input found by probing: each answers a field-named 4xx and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kaito_ragengine.app import create_app
from kaito_ragengine.errors import InvalidRequestError
from kaito_ragengine.stores.index import RagIndex
from kaito_ragengine.stores.snapshots import IndexSnapshot, SnapshotStore

from .conftest import HashingEmbedder, hashing_vectors, make_settings, running_app

JSON = {"content-type": "application/json"}


async def _post_raw(client: httpx.AsyncClient, path: str, raw: bytes) -> httpx.Response:
    return await client.post(path, content=raw, headers=JSON)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "raw", "loc"),
    [
        (
            "/index",
            b'{"index_name":"m1","documents":[{"text":"bad \\ud800 x"}]}',
            ["body", "documents", 0, "text"],
        ),
        (
            "/index",
            b'{"index_name":"m1","documents":[{"text":"t","metadata":{"k":"\\udc00"}}]}',
            ["body", "documents", 0, "metadata"],
        ),
        ("/index", b'{"index_name":"\\ud800","documents":[{"text":"t"}]}', ["body", "index_name"]),
        ("/retrieve", b'{"index_name":"m1","query":"\\udfff"}', ["body", "query"]),
        (
            "/indexes/m1/documents",
            b'{"documents":[{"doc_id":"x","text":"\\ud800"}]}',
            ["body", "documents", 0, "text"],
        ),
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"\\ud800"}]}', ["body"]),
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"q"}],"x":NaN}', ["body"]),
    ],
)
async def test_lone_surrogates_are_a_422_naming_the_field(
    client: httpx.AsyncClient, path: str, raw: bytes, loc: list[Any]
) -> None:
    response = await _post_raw(client, path, raw)
    assert response.status_code == 422, response.text
    issue = response.json()["detail"][0]
    assert issue["loc"] == loc
    assert issue["type"] in {"string_unicode", "value_error"}
    assert "\\ud" in json.dumps(issue["input"]) or "NaN" in issue["msg"]  # echoed escaped
    assert (await client.get("/indexes")).json() == []
    # the connection is still usable: the next request on the same client works
    assert (await client.get("/health")).status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_in_metadata_are_refused(
    client: httpx.AsyncClient, constant: str
) -> None:
    raw = f'{{"index_name":"m1","documents":[{{"text":"t","metadata":{{"a":{constant}}}}}]}}'
    response = await _post_raw(client, "/index", raw.encode())
    assert response.status_code == 422, response.text
    issue = response.json()["detail"][0]
    assert issue["loc"] == ["body", "documents", 0, "metadata"]
    assert "metadata['a']" in issue["msg"]
    assert "NaN and Infinity are not allowed" in issue["msg"]
    assert (await client.get("/indexes")).json() == []

    await client.post("/index", json={"index_name": "m1", "documents": [{"text": "kept"}]})
    doc_id = (await client.get("/indexes/m1/documents")).json()["documents"][0]["doc_id"]
    raw = f'{{"documents":[{{"doc_id":"{doc_id}","text":"new","metadata":{{"a":{constant}}}}}]}}'
    response = await _post_raw(client, "/indexes/m1/documents", raw.encode())
    assert response.status_code == 422
    listed = (await client.get("/indexes/m1/documents")).json()["documents"]
    assert [(d["text"], d["metadata"]) for d in listed] == [("kept", {})]

    raw = f'{{"index_name":"m1","query":"kept","metadata_filter":{{"a":{constant}}}}}'
    response = await _post_raw(client, "/retrieve", raw.encode())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "metadata_filter"]
    response = await client.get(
        "/indexes/m1/documents", params={"metadata_filter": f'{{"a": {constant}}}'}
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("metadata_filter:")


def test_control_characters_in_path_are_refused_by_the_store(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "data", 5)
    for path in ("x\x85y", "x\x9fy", "x\x00y", "x\x1by", "x\x7fy"):
        with pytest.raises(InvalidRequestError, match="control characters"):
            store.location("docs", path)
    assert store.location("docs", "caf\u00e9/\u00a0ok").name == "\u00a0ok"  # not C1: allowed


async def _texts(client: httpx.AsyncClient, name: str) -> list[str]:
    response = await client.get(f"/indexes/{name}/documents", params={"limit": 100})
    assert response.status_code == 200, response.text
    return sorted(d["text"] for d in response.json()["documents"])


@pytest.mark.asyncio
async def test_one_index_cannot_persist_into_anothers_directory(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    root = tmp_path / "data"
    settings = make_settings(tmp_path, snapshot_on_shutdown=False)
    store = SnapshotStore(root, 5)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await client.post("/index", json={"index_name": "victim", "documents": [{"text": "v"}]})
        await client.post("/index", json={"index_name": "other", "documents": [{"text": "o"}]})
        await client.post("/index", json={"index_name": "fresh", "documents": [{"text": "f"}]})
        assert (await client.post("/persist/victim")).status_code == 200
        victim_snapshots = store.snapshots_of(root / "victim")
        for path in ["victim", "victim/nested", str(root / "victim"), "fresh", "fresh/x"]:
            for _ in range(6):  # more than the retention of 5
                response = await client.post("/persist/other", params={"path": path})
                assert response.status_code == 409, (path, response.text)
                assert "path" in response.json()["detail"]
        assert store.snapshots_of(root / "victim") == victim_snapshots
        assert not (root / "fresh").exists()
        assert not (root / "victim" / "nested").exists()
        # a custom directory belongs to the first index that writes there
        assert (await client.post("/persist/other", params={"path": "shared"})).status_code == 200
        response = await client.post("/persist/victim", params={"path": "shared"})
        assert response.status_code == 409
        assert "'other'" in response.json()["detail"]
        response = await client.post("/persist/victim", params={"path": "shared/inner"})
        assert response.status_code == 409
        response = await client.post("/persist/victim", params={"path": "outer"})
        assert response.status_code == 200
        response = await client.post("/persist/other", params={"path": "."})
        assert response.status_code == 400
        # a directory above one that belongs to another index is refused too
        assert (await client.post("/persist/other", params={"path": "deep/a"})).status_code == 200
        response = await client.post("/persist/victim", params={"path": "deep"})
        assert response.status_code == 409
        assert "'other'" in response.json()["detail"]
        assert (await client.post("/persist/fresh")).status_code == 200  # its own place works
        loaded = await client.post("/load/victim", params={"overwrite": "true"})
        assert loaded.status_code == 200
        assert await _texts(client, "victim") == ["v"]
    async with running_app(create_app(settings, embedder=HashingEmbedder())) as client:
        assert (await client.get("/indexes")).json() == ["fresh", "victim"]
        assert await _texts(client, "victim") == ["v"]


@pytest.mark.asyncio
async def test_a_directory_written_before_owner_files_is_not_served_as_another_index(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    root = tmp_path / "data"
    settings = make_settings(tmp_path, snapshot_on_shutdown=False)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await client.post("/index", json={"index_name": "other", "documents": [{"text": "o"}]})
        await client.post("/persist/other")
    (root / "other").rename(root / "victim")  # what the old cross-index persist left behind
    (root / "victim" / "owner").unlink()
    async with running_app(create_app(settings, embedder=HashingEmbedder())) as client:
        assert (await client.get("/indexes")).json() == []  # restore skipped it, logged
        response = await client.post("/load/victim")
        assert response.status_code == 409
        assert "'other'" in response.json()["detail"]
        await client.post("/index", json={"index_name": "victim", "documents": [{"text": "v"}]})
        assert (await client.post("/persist/victim")).status_code == 409


@pytest.mark.asyncio
async def test_deleted_index_stays_deleted_after_restart(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    settings = make_settings(tmp_path)  # snapshot on shutdown, restore on start
    async with running_app(create_app(settings, embedder=embedder)) as client:
        for name in ("alpha", "beta", "gamma"):
            docs = [{"text": f"{name} text"}]
            await client.post("/index", json={"index_name": name, "documents": docs})
            assert (await client.post(f"/persist/{name}")).status_code == 200
        assert (await client.delete("/indexes/beta")).status_code == 200
        assert (await client.delete("/indexes/gamma")).status_code == 200
        assert (await client.get("/indexes")).json() == ["alpha"]
    async with running_app(create_app(settings, embedder=HashingEmbedder())) as client:
        assert (await client.get("/indexes")).json() == ["alpha"]
        # the snapshots were kept: an explicit load brings an index back, for good
        assert (await client.post("/load/beta")).status_code == 200
        # a new index under a deleted name is persisted at shutdown and comes back
        await client.post("/index", json={"index_name": "gamma", "documents": [{"text": "new"}]})
    async with running_app(create_app(settings, embedder=HashingEmbedder())) as client:
        assert (await client.get("/indexes")).json() == ["alpha", "beta", "gamma"]
        assert await _texts(client, "gamma") == ["new"]
        assert await _texts(client, "beta") == ["beta text"]


class GatedEmbedder(HashingEmbedder):
    """Embeds one call at a time once ``gate`` is set; records each call's texts."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.texts: list[list[str]] = []

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.texts.append(list(texts))
        if len(texts) > 1 or texts[0].startswith("chunk"):
            self.started.set()
            await self.gate.wait()
        return hashing_vectors(texts)


@pytest.mark.asyncio
async def test_shutdown_refuses_unapplied_writes_with_503(tmp_path: Path) -> None:
    embedder = GatedEmbedder()
    app = create_app(make_settings(tmp_path, embedding_batch_size=4), embedder=embedder)
    async with running_app(app) as client:
        embedder.gate.set()
        await client.post("/index", json={"index_name": "keep", "documents": [{"text": "k"}]})
        embedder.gate.clear()
        big = [{"text": f"chunk {i} " + "word " * 20} for i in range(40)]
        pending = asyncio.create_task(
            client.post("/index", json={"index_name": "big", "documents": big})
        )
        await embedder.started.wait()
        app.state.rag.begin_shutdown()  # what the SIGTERM handler calls
        embedder.gate.set()
        response = await pending
        assert response.status_code == 503, response.text
        assert "shutting down" in response.json()["detail"]
        assert len(embedder.texts) < 10  # it stopped after the slice in flight
        assert "big" not in (await client.get("/indexes")).json()
        for method, path, body in [
            ("post", "/index", {"index_name": "keep", "documents": [{"text": "late"}]}),
            ("post", "/indexes/keep/documents/delete", {"doc_ids": ["x"]}),
            ("delete", "/indexes/keep", None),
            ("post", "/load/keep", None),
        ]:
            response = await client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
        retrieved = await client.post("/retrieve", json={"index_name": "keep", "query": "k"})
        assert retrieved.status_code == 200  # reads keep working while draining
    # the shutdown snapshot holds every acknowledged write and nothing of the refused one
    async with running_app(create_app(make_settings(tmp_path), embedder=HashingEmbedder())) as c:
        assert (await c.get("/indexes")).json() == ["keep"]
        assert await _texts(c, "keep") == ["k"]


@pytest.mark.asyncio
async def test_documents_are_embedded_in_bounded_slices(tmp_path: Path) -> None:
    embedder = GatedEmbedder()
    embedder.gate.set()
    settings = make_settings(
        tmp_path, embedding_batch_size=8, embedding_batch_chars=2000, snapshot_on_shutdown=False
    )
    async with running_app(create_app(settings, embedder=embedder)) as client:
        text = " ".join(f"sentence {i} about a long document." for i in range(3000))
        response = await client.post(
            "/index", json={"index_name": "long", "documents": [{"text": text}]}
        )
        assert response.status_code == 200
        slices = [t for t in embedder.texts if len(t) > 1 or t[0].startswith("sentence")]
        assert len(slices) > 5
        assert all(len(s) <= 8 and sum(map(len, s)) <= 2000 for s in slices if len(s) > 1)
        chunks = sum(len(s) for s in slices)
        listed = (await client.get("/indexes/long/documents")).json()
        assert listed["total_items"] == 1
        hit = await client.post(
            "/retrieve", json={"index_name": "long", "query": "sentence 2999", "max_node_count": 1}
        )
        assert "sentence 2999" in hit.json()["results"][0]["text"]
        assert chunks > 10


def test_owner_file_is_complete_or_absent_after_a_kill(tmp_path: Path) -> None:
    """A writer killed while claiming a directory leaves a temporary file, never a partial
    owner; the next write removes the leftover and claims the directory."""
    root = tmp_path / "data"
    store = SnapshotStore(root, 5)
    location = store.location("idx")
    location.mkdir(parents=True)
    (location / ".tmp-owner-deadbeef").write_bytes(b"id")  # what a kill mid-claim leaves
    assert store.owner(location) is None
    index = RagIndex("idx", 8)
    store.write(location, IndexSnapshot.capture(index, "m"))
    assert (location / "owner").read_text() == "idx"
    assert not list(location.glob(".tmp-*"))


@pytest.mark.asyncio
async def test_a_path_inside_its_own_snapshots_directory_does_not_disturb_retention(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    root = tmp_path / "data"
    settings = make_settings(tmp_path, snapshot_on_shutdown=False, snapshot_retention=2)
    store = SnapshotStore(root, 2)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await client.post("/index", json={"index_name": "idx", "documents": [{"text": "a"}]})
        nested = await client.post("/persist/idx", params={"path": "idx/snapshots/mine"})
        assert nested.status_code == 200
        for i in range(3):
            await client.post("/index", json={"index_name": "idx", "documents": [{"text": str(i)}]})
            assert (await client.post("/persist/idx")).status_code == 200
        kept = store.snapshots_of(root / "idx")
        assert len(kept) == 2
        assert [len(store.read(k).documents) for k in kept] == [4, 3]
        assert store.snapshots_of(root / "idx" / "snapshots" / "mine")  # untouched
        loaded = await client.post("/load/idx", params={"overwrite": "true"})
        assert "4 documents" in loaded.json()["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["idx/owner", "idx/owner/below"])
async def test_a_path_through_a_file_is_a_400(
    tmp_path: Path, embedder: HashingEmbedder, path: str
) -> None:
    settings = make_settings(tmp_path, snapshot_on_shutdown=False)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await client.post("/index", json={"index_name": "idx", "documents": [{"text": "a"}]})
        assert (await client.post("/persist/idx")).status_code == 200
        response = await client.post("/persist/idx", params={"path": path})
        assert response.status_code == 400, response.text
        assert "is a file, not a directory" in response.json()["detail"]
        assert (tmp_path / "data" / "idx" / "owner").read_text() == "idx"
