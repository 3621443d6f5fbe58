"""Property-based fuzzing of every operation in the OpenAPI schema: never a 5xx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI, Request
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from kaito_ragengine.app import create_app

from .conftest import HashingEmbedder, ServerThread, make_settings

SCHEMA_DOCS = [{"text": f"document {i} about fuzzing", "metadata": {"k": i % 2}} for i in range(5)]


def _robust_llm() -> FastAPI:
    """An LLM that answers any body (the fuzzer sends strange but schema-valid ones)."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "m"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        await request.body()
        message = {"role": "assistant", "content": "ok"}
        return {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


@pytest.fixture(scope="module")
def rag_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with ServerThread(_robust_llm()) as llm:
        app = create_app(
            make_settings(
                tmp,
                llm_inference_url=llm.url,
                llm_context_window=4096,
                snapshot_on_shutdown=False,
                max_request_bytes=1 << 20,
            ),
            embedder=HashingEmbedder(),
        )
        with ServerThread(app) as server:
            httpx.post(f"{server.url}/index", json={"index_name": "docs", "documents": SCHEMA_DOCS})
            yield server.url


def _schema() -> Any:
    app = create_app(make_settings(Path("/nonexistent"), snapshot_on_shutdown=False))
    return schemathesis.openapi.from_dict(app.openapi())


schema = _schema()
_lock = threading.Lock()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, rag_url: str) -> None:
    with _lock:
        case.call_and_validate(base_url=rag_url, checks=[not_a_server_error], timeout=30)


def test_schema_lists_every_endpoint() -> None:
    paths = set(_schema().raw_schema["paths"])
    assert paths == {
        "/health",
        "/metrics",
        "/index",
        "/indexes",
        "/indexes/{index_name}/documents",
        "/indexes/{index_name}/documents/delete",
        "/indexes/{index_name}",
        "/persist/{index_name}",
        "/load/{index_name}",
        "/retrieve",
        "/v1/chat/completions",
    }
