"""Snapshots: restart, retention, corruption fallback and ``kill -9`` during a persist."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kaito_ragengine.app import create_app
from kaito_ragengine.stores.snapshots import SnapshotStore

from .conftest import HashingEmbedder, make_settings, running_app

DOCS = [
    {"text": f"document number {i} about topic {i % 3}", "metadata": {"i": i}} for i in range(20)
]


@pytest.mark.asyncio
async def test_shutdown_snapshot_and_restore_on_start(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    settings = make_settings(tmp_path)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await client.post("/index", json={"index_name": "alpha", "documents": DOCS})
        await client.post("/index", json={"index_name": "beta", "documents": DOCS[:5]})
        before = (
            await client.post("/retrieve", json={"index_name": "alpha", "query": "number 7"})
        ).json()
    assert len(SnapshotStore(tmp_path / "data", 5).snapshots_of(tmp_path / "data" / "alpha")) == 1
    async with running_app(create_app(settings, embedder=HashingEmbedder())) as client:
        assert (await client.get("/indexes")).json() == ["alpha", "beta"]
        after = (
            await client.post("/retrieve", json={"index_name": "alpha", "query": "number 7"})
        ).json()
        assert after == before
        assert (await client.get("/indexes/beta/documents")).json()["total_items"] == 5
        # the restored index keeps working: deletes and new ids do not collide
        first = before["results"][0]["doc_id"]
        await client.post("/indexes/alpha/documents/delete", json={"doc_ids": [first]})
        await client.post(
            "/index", json={"index_name": "alpha", "documents": [{"text": "brand new text"}]}
        )
        top = (
            await client.post("/retrieve", json={"index_name": "alpha", "query": "brand new"})
        ).json()
        assert top["results"][0]["text"] == "brand new text"


@pytest.mark.asyncio
async def test_retention_keeps_the_newest(tmp_path: Path, embedder: HashingEmbedder) -> None:
    settings = make_settings(tmp_path, snapshot_retention=2, snapshot_on_shutdown=False)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        for i in range(4):
            await client.post("/index", json={"index_name": "idx", "documents": [DOCS[i]]})
            assert (await client.post("/persist/idx")).status_code == 200
        store = SnapshotStore(tmp_path / "data", 2)
        snapshots = store.snapshots_of(tmp_path / "data" / "idx")
        assert len(snapshots) == 2
        assert len(store.read(snapshots[0]).documents) == 4
        assert len(store.read(snapshots[1]).documents) == 3


@pytest.mark.asyncio
async def test_corrupt_newest_snapshot_falls_back(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    settings = make_settings(tmp_path, snapshot_on_shutdown=False)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await client.post("/index", json={"index_name": "idx", "documents": DOCS[:3]})
        await client.post("/persist/idx")
        await client.post("/index", json={"index_name": "idx", "documents": DOCS[3:6]})
        await client.post("/persist/idx")
        newest = SnapshotStore(tmp_path / "data", 5).snapshots_of(tmp_path / "data" / "idx")[0]
        state = newest / "state.json"
        state.write_bytes(state.read_bytes().replace(b"document", b"DOCUMENT"))
        loaded = await client.post("/load/idx", params={"overwrite": "true"})
        assert loaded.status_code == 200
        assert "3 documents" in loaded.json()["message"]


@pytest.mark.asyncio
async def test_snapshot_from_another_model_is_refused(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    settings = make_settings(tmp_path, snapshot_on_shutdown=False)
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await client.post("/index", json={"index_name": "idx", "documents": DOCS[:3]})
        await client.post("/persist/idx")

    class OtherModel(HashingEmbedder):
        model_id = "other-model"

    async with running_app(create_app(settings, embedder=OtherModel())) as client:
        assert (await client.get("/indexes")).json() == []  # not restored, logged instead
        response = await client.post("/load/idx")
        assert response.status_code == 422
        assert "other-model" in response.json()["detail"]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from kaito_ragengine.stores.index import DocumentRecord, RagIndex
    from kaito_ragengine.stores.snapshots import IndexSnapshot, SnapshotStore

    root, rounds = Path(sys.argv[1]), 0
    store = SnapshotStore(root, retention=3)
    index = RagIndex("big", 1024)
    rng = np.random.default_rng(0)
    while True:
        rounds += 1
        chunks = [f"round {rounds} chunk {i}" for i in range(4000)]
        matrix = rng.standard_normal((len(chunks), 1024)).astype("float32")
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        doc = DocumentRecord(f"doc{rounds}", "text", {"round": rounds}, f"h{rounds}")
        index.add(doc, chunks, matrix)
        store.write(root / "big", IndexSnapshot.capture(index, "m"))
        print(rounds, flush=True)
    """
)


def test_kill_9_during_persist_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "1"  # one complete snapshot exists
        deadline = time.monotonic() + 60
        killed_mid_write = False
        while time.monotonic() < deadline and not killed_mid_write:
            if any((root / "big").glob(".tmp-*")):
                os.kill(process.pid, signal.SIGKILL)
                killed_mid_write = True
            time.sleep(0.001)
        assert killed_mid_write, "never saw a snapshot being written"
    finally:
        process.kill()
        process.wait()
    store = SnapshotStore(root, retention=3)
    snapshots = store.snapshots_of(root / "big")
    assert snapshots, "the earlier snapshot must survive"
    for snapshot_dir in snapshots:  # every snapshot that is visible is complete and verifies
        snapshot = store.read(snapshot_dir)
        rounds = len(snapshot.documents)
        assert json.loads((snapshot_dir / "manifest.json").read_text())["format"] == 1
        assert len(snapshot.id_map) == 4000 * rounds
    latest = store.read_latest(root / "big", embedding_model_id="m").build("big")
    assert len(latest.nodes) == 4000 * len(latest.documents)
    # the next write clears what the killed process left behind
    store.write(root / "big", store.read_latest(root / "big", embedding_model_id="m"))
    assert not list((root / "big").glob(".tmp-*"))
