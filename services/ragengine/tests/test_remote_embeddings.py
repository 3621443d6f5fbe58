"""Remote embeddings: a real loopback ``/v1/embeddings`` server with a Bearer secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaito_ragengine.app import create_app
from kaito_ragengine.embeddings.remote import RemoteEmbedder, embeddings_url
from kaito_sdk.urls import UnsafeURLError

from .conftest import ServerThread, fake_embeddings_app, make_settings, running_app


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def embed_server(seen: list[dict[str, Any]]) -> Iterator[ServerThread]:
    with ServerThread(fake_embeddings_app("s3cret", seen)) as server:
        yield server


def _settings(tmp_path: Path, url: str, token: str) -> Any:
    return make_settings(
        tmp_path,
        embedding_source="remote",
        embedding_url=url,
        embedding_model_id="remote-embed",
        embedding_access_secret=token,
        allow_private_urls=True,
        embedding_batch_size=2,
        snapshot_on_shutdown=False,
    )


@pytest.mark.asyncio
async def test_remote_embeddings_index_and_retrieve(
    tmp_path: Path, embed_server: ServerThread, seen: list[dict[str, Any]]
) -> None:
    docs = [
        {"text": t} for t in ("red apples", "green pears", "blue sky", "yellow sun", "white snow")
    ]
    app = create_app(_settings(tmp_path, f"{embed_server.url}/v1", "s3cret"))
    async with running_app(app) as client:
        assert (
            await client.post("/index", json={"index_name": "r", "documents": docs})
        ).status_code == 200
        result = (
            await client.post("/retrieve", json={"index_name": "r", "query": "blue sky"})
        ).json()
    assert result["results"][0]["text"] == "blue sky"
    assert result["results"][0]["dense_score"] == pytest.approx(1.0, abs=1e-5)  # normalised
    assert all(body["model"] == "remote-embed" for body in seen)
    assert [len(body["input"]) for body in seen[:3]] == [2, 2, 1]  # batched


@pytest.mark.asyncio
async def test_wrong_secret_is_a_clear_502(tmp_path: Path, embed_server: ServerThread) -> None:
    app = create_app(_settings(tmp_path, embed_server.url, "wrong"))
    async with running_app(app) as client:
        response = await client.post(
            "/index", json={"index_name": "r", "documents": [{"text": "x"}]}
        )
    assert response.status_code == 502
    assert "401" in response.json()["detail"]
    assert "wrong" not in response.text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://localhost/v1",
        "http://169.254.169.254/v1",
        "http://10.0.0.5",
    ],
)
def test_private_urls_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        RemoteEmbedder(url, model_id="m")
    assert RemoteEmbedder(url, model_id="m", allow_private=True).url.endswith("/embeddings")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://e.example.com", "https://e.example.com/v1/embeddings"),
        ("https://e.example.com/v1/", "https://e.example.com/v1/embeddings"),
        (
            "https://e.example.com/openai/v1/embeddings",
            "https://e.example.com/openai/v1/embeddings",
        ),
    ],
)
def test_embeddings_url(url: str, expected: str) -> None:
    assert embeddings_url(url) == expected
