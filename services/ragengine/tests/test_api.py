"""The HTTP contract of every endpoint and its errors (deterministic embedder)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaito_ragengine.app import create_app
from kaito_ragengine.protocol.retrieve import RetrievedNode, RetrieveResponse

from .conftest import HashingEmbedder, make_settings, running_app

pytestmark = pytest.mark.asyncio

DOCS = [
    {"text": "The cat sat on the warm mat in the kitchen.", "metadata": {"topic": "pets", "n": 1}},
    {
        "text": "Kubernetes schedules pods onto nodes with GPUs.",
        "metadata": {"topic": "k8s", "n": 2},
    },
    {
        "text": "FAISS searches dense vectors by inner product.",
        "metadata": {"topic": "search", "n": 3},
    },
]


async def _index(
    client: httpx.AsyncClient, name: str = "docs", docs: list[Any] = DOCS
) -> list[Any]:
    response = await client.post("/index", json={"index_name": name, "documents": docs})
    assert response.status_code == 200, response.text
    return response.json()


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "Healthy", "detail": None}
    await _index(client)
    await client.post("/retrieve", json={"index_name": "docs", "query": "cat"})
    text = (await client.get("/metrics")).text
    assert 'rag_requests_total{method="POST",route="/retrieve",status="200"} 1.0' in text
    assert 'rag_index_documents{index="docs"} 3.0' in text
    assert "rag_embedding_seconds_count" in text
    assert "rag_query_batch_size_count 1.0" in text


async def test_index_ids_are_content_hashes_and_idempotent(
    client: httpx.AsyncClient, embedder: HashingEmbedder
) -> None:
    first = await _index(client)
    assert [d["doc_id"] for d in first] == [
        hashlib.sha256(d["text"].encode()).hexdigest() for d in DOCS
    ]
    assert first[0]["hash_value"] == first[0]["doc_id"]
    assert first[0]["metadata"] == {"topic": "pets", "n": 1}
    calls = len(embedder.calls)
    again = await _index(client, docs=[*DOCS, DOCS[0]])
    assert [d["doc_id"] for d in again] == [d["doc_id"] for d in first] + [first[0]["doc_id"]]
    assert len(embedder.calls) == calls  # nothing new was embedded
    listing = (await client.get("/indexes/docs/documents")).json()
    assert listing["total_items"] == 3
    assert (await client.get("/indexes")).json() == ["docs"]


async def test_list_documents_paging_truncation_and_filter(client: httpx.AsyncClient) -> None:
    await _index(client)
    page = (await client.get("/indexes/docs/documents", params={"limit": 2, "offset": 1})).json()
    assert page["count"] == 2
    assert page["total_items"] == 3
    assert [d["text"] for d in page["documents"]] == [DOCS[1]["text"], DOCS[2]["text"]]
    short = (await client.get("/indexes/docs/documents", params={"max_text_length": 7})).json()
    assert short["documents"][0]["text"] == "The cat"
    assert short["documents"][0]["is_truncated"] is True
    filtered = await client.get(
        "/indexes/docs/documents", params={"metadata_filter": json.dumps({"topic": "k8s"})}
    )
    assert [d["metadata"]["n"] for d in filtered.json()["documents"]] == [2]
    assert filtered.json()["total_items"] == 1


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"metadata_filter": "{not json"}, "metadata_filter"),
        ({"metadata_filter": "[1, 2]"}, "metadata_filter"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"max_text_length": 0}, "max_text_length"),
    ],
)
async def test_list_documents_rejects_bad_parameters(
    client: httpx.AsyncClient, params: dict[str, Any], needle: str
) -> None:
    await _index(client)
    response = await client.get("/indexes/docs/documents", params=params)
    assert response.status_code == 422
    assert needle in response.text


async def test_update_documents(client: httpx.AsyncClient) -> None:
    first = await _index(client)
    body = {
        "documents": [
            {
                "doc_id": first[0]["doc_id"],
                "text": "Dogs chase cats around the garden.",
                "metadata": {"topic": "pets"},
            },
            {
                "doc_id": first[1]["doc_id"],
                "text": DOCS[1]["text"],
                "metadata": DOCS[1]["metadata"],
            },
            {"doc_id": "missing", "text": "nothing", "metadata": {}},
        ]
    }
    result = (await client.post("/indexes/docs/documents", json=body)).json()
    assert [d["doc_id"] for d in result["updated_documents"]] == [first[0]["doc_id"]]
    updated = result["updated_documents"][0]
    assert (
        updated["hash_value"] == hashlib.sha256(b"Dogs chase cats around the garden.").hexdigest()
    )
    assert [d["doc_id"] for d in result["unchanged_documents"]] == [first[1]["doc_id"]]
    assert [d["doc_id"] for d in result["not_found_documents"]] == ["missing"]
    hits = (
        await client.post("/retrieve", json={"index_name": "docs", "query": "dogs garden"})
    ).json()
    assert hits["results"][0]["doc_id"] == first[0]["doc_id"]
    assert hits["results"][0]["text"] == "Dogs chase cats around the garden."


async def test_delete_documents_and_index(client: httpx.AsyncClient) -> None:
    first = await _index(client)
    response = await client.post(
        "/indexes/docs/documents/delete", json={"doc_ids": [first[0]["doc_id"], "nope"]}
    )
    assert response.json() == {
        "deleted_doc_ids": [first[0]["doc_id"]],
        "not_found_doc_ids": ["nope"],
    }
    hits = (
        await client.post(
            "/retrieve", json={"index_name": "docs", "query": "cat mat", "max_node_count": 10}
        )
    ).json()
    assert first[0]["doc_id"] not in {r["doc_id"] for r in hits["results"]}
    # re-adding the deleted text works and does not collide with surviving vectors
    again = await _index(client, docs=[DOCS[0]])
    assert again[0]["doc_id"] == first[0]["doc_id"]
    hits = (await client.post("/retrieve", json={"index_name": "docs", "query": "cat mat"})).json()
    assert hits["results"][0]["doc_id"] == first[0]["doc_id"]
    deleted = await client.delete("/indexes/docs")
    assert deleted.json() == {"message": "Successfully deleted index docs."}
    assert (await client.get("/indexes")).json() == []


async def test_retrieve_scores_sources_and_filters(client: httpx.AsyncClient) -> None:
    await _index(client)
    body = {"index_name": "docs", "query": "pods on GPU nodes", "max_node_count": 3}
    response = await client.post("/retrieve", json=body)
    assert response.headers["content-type"] == "application/json"
    result = response.json()
    # the hand-written body is exactly the documented model: every field, nothing else
    assert RetrieveResponse.model_validate(result).model_dump() == result
    assert set(result["results"][0]) == set(RetrievedNode.model_fields)
    assert result["query"] == "pods on GPU nodes"
    assert result["count"] == 3
    top = result["results"][0]
    assert top["text"] == DOCS[1]["text"]
    assert top["source"] == "both"
    assert top["metadata"] == {"topic": "k8s", "n": 2}
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)  # higher is better everywhere
    assert top["dense_score"] == max(r["dense_score"] for r in result["results"])
    assert top["sparse_score"] > 0
    assert -1.0 <= top["dense_score"] <= 1.0 + 1e-6
    filtered = (
        await client.post("/retrieve", json={**body, "metadata_filter": {"topic": "pets"}})
    ).json()
    assert [r["metadata"]["topic"] for r in filtered["results"]] == ["pets"]
    none = (await client.post("/retrieve", json={**body, "metadata_filter": {"topic": "x"}})).json()
    assert none == {"query": body["query"], "results": [], "count": 0}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/retrieve", {"index_name": "nope", "query": "q"}),
        ("get", "/indexes/nope/documents", None),
        ("post", "/indexes/nope/documents", {"documents": [{"doc_id": "a", "text": "b"}]}),
        ("post", "/indexes/nope/documents/delete", {"doc_ids": ["a"]}),
        ("delete", "/indexes/nope", None),
        ("post", "/persist/nope", None),
        ("post", "/load/nope", None),
    ],
)
async def test_unknown_index_is_404(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 404, response.text
    assert "nope" in response.json()["detail"]


@pytest.mark.parametrize(
    "name", ["../etc", "a/b", ".hidden", "with space", "tab\there", "x" * 129, "/abs"]
)
async def test_bad_index_names_are_rejected(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/index", json={"index_name": name, "documents": [{"text": "t"}]})
    assert response.status_code == 422, response.text
    assert "index_name" in response.text
    assert (await client.get("/indexes")).json() == []


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/index", {"index_name": "a"}, "documents"),
        ("/index", {"index_name": "a", "documents": []}, "documents"),
        ("/index", {"index_name": "a", "documents": [{"text": ""}]}, "text"),
        (
            "/index",
            {"index_name": "a", "documents": [{"text": "t", "metadata": {"k": [1]}}]},
            "metadata",
        ),
        ("/index", {"index_name": "a", "documents": [{"text": "t", "extra": 1}]}, "extra"),
        ("/retrieve", {"index_name": "a"}, "query"),
        ("/retrieve", {"index_name": "a", "query": "q", "max_node_count": 0}, "max_node_count"),
        ("/indexes/a/documents/delete", {"doc_ids": []}, "doc_ids"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "context_token_ratio": 0.9},
            "context_token_ratio",
        ),
    ],
)
async def test_bad_bodies_are_422(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], needle: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert needle in response.text


async def test_max_node_count_over_limit_is_422(client: httpx.AsyncClient) -> None:
    await _index(client)
    response = await client.post(
        "/retrieve", json={"index_name": "docs", "query": "q", "max_node_count": 301}
    )
    assert response.status_code == 422
    assert "max_node_count" in response.json()["detail"]


async def test_limits(tmp_path: Path, embedder: HashingEmbedder) -> None:
    settings = make_settings(
        tmp_path,
        max_request_bytes=4096,
        max_documents_per_request=3,
        max_document_chars=100,
        snapshot_on_shutdown=False,
    )
    async with running_app(create_app(settings, embedder=embedder)) as client:
        big = {"index_name": "a", "documents": [{"text": "x" * 5000}]}
        response = await client.post("/index", json=big)
        assert response.status_code == 413
        assert "max_request_bytes" in response.text
        raw = json.dumps(big).encode()

        async def chunked() -> AsyncIterator[bytes]:  # no content-length header
            for i in range(0, len(raw), 1000):
                yield raw[i : i + 1000]

        response = await client.post(
            "/index", content=chunked(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert "max_request_bytes" in response.text
        many = {"index_name": "a", "documents": [{"text": f"doc {i}"} for i in range(4)]}
        response = await client.post("/index", json=many)
        assert response.status_code == 413
        assert "documents" in response.text
        long = {"index_name": "a", "documents": [{"text": "ok"}, {"text": "y" * 101}]}
        response = await client.post("/index", json=long)
        assert response.status_code == 422
        assert "documents[1].text" in response.text
        assert (await client.get("/indexes")).json() == []


async def test_persist_and_load_contract(client: httpx.AsyncClient, tmp_path: Path) -> None:
    await _index(client)
    persisted = await client.post("/persist/docs")
    assert persisted.status_code == 200
    assert str(tmp_path / "data" / "docs" / "snapshots") in persisted.json()["message"]
    conflict = await client.post("/load/docs")
    assert conflict.status_code == 409
    assert "overwrite" in conflict.text
    await client.post(
        "/indexes/docs/documents/delete",
        json={"doc_ids": [hashlib.sha256(DOCS[0]["text"].encode()).hexdigest()]},
    )
    loaded = await client.post("/load/docs", params={"overwrite": "true"})
    assert loaded.status_code == 200
    assert "3 documents" in loaded.text
    assert (await client.get("/indexes/docs/documents")).json()["total_items"] == 3
    copy = await client.post("/persist/docs", params={"path": "copies/docs-copy"})
    assert copy.status_code == 200
    assert (
        await client.post("/load/restored", params={"path": "copies/docs-copy"})
    ).status_code == 200
    assert (await client.get("/indexes")).json() == ["docs", "restored"]
    assert (await client.post("/load/other")).status_code == 404


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/etc", 400, "persistence root"),
        ("../outside", 400, "persistence root"),
        ("copies/../../outside", 400, "persistence root"),
        ("/tmp", 400, "persistence root"),
        (".", 400, "persistence root"),
        ("a" * 300, 400, "per component"),
        ("a/" * 600, 422, "at most 1024 characters"),
        ("", 422, "at least 1 character"),
        ("bad\x01name", 422, "should match pattern"),
        ("bad\x85name", 422, "should match pattern"),  # C1 (NEL)
        ("bad\x9bname", 422, "should match pattern"),  # C1 (CSI)
        ("bad\x7fname", 422, "should match pattern"),
    ],
)
async def test_persist_path_must_stay_under_root(
    client: httpx.AsyncClient, tmp_path: Path, path: str, status: int, needle: str
) -> None:
    await _index(client)
    response = await client.post("/persist/docs", params={"path": path})
    assert response.status_code == status, response.text
    assert needle in response.text
    assert '"loc":["query","path"]' in response.text or "path" in response.json()["detail"]
    response = await client.post("/load/x", params={"path": path})
    assert response.status_code == status
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.faiss"))
    assert not (tmp_path / "outside").exists()


async def test_unwritable_persistence_root_is_a_clear_error(
    tmp_path: Path, embedder: HashingEmbedder
) -> None:
    (tmp_path / "file").write_text("not a directory")
    settings = make_settings(
        tmp_path, persist_dir=str(tmp_path / "file"), snapshot_on_shutdown=False
    )
    async with running_app(create_app(settings, embedder=embedder)) as client:
        await _index(client)
        response = await client.post("/persist/docs")
        assert response.status_code == 500
        assert "could not write a snapshot" in response.json()["detail"]
