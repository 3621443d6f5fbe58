"""Schemathesis ``--checks all`` against a live server: no 5xx, and the OpenAPI document
describes what the service does (status codes, bodies, limits, index-name pattern)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from kaito_ragengine.app import create_app

from .conftest import HashingEmbedder, ServerThread, make_settings

SCHEMA_DOCS = [{"text": f"document {i} about fuzzing", "metadata": {"k": i % 2}} for i in range(5)]
ST = str(Path(sys.executable).with_name("st"))

# Two rules the schema cannot state, each with the status the service documents for it:
# a body over MAX_REQUEST_BYTES is refused (413) before it is parsed, and a schema-valid
# ``path`` can still lie outside the persistence root or have a component over 255 bytes,
# and a schema-valid chat can exceed the LLM's context window or not end with a user
# message (400).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "429"]

[[operations]]
include-path-regex = "^/(persist|load)/|^/v1/chat/completions$"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "429"
]
"""


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
                max_documents_per_request=20,
                max_document_chars=20_000,
            ),
            embedder=HashingEmbedder(),
        )
        with ServerThread(app) as server:
            httpx.post(f"{server.url}/index", json={"index_name": "docs", "documents": SCHEMA_DOCS})
            yield server.url


def _schema() -> dict[str, Any]:
    app = create_app(make_settings(Path("/nonexistent"), snapshot_on_shutdown=False, max_top_k=50))
    return app.openapi()


def test_schemathesis_all_checks(rag_url: str, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    result = subprocess.run(  # our own venv's schemathesis CLI
        [
            ST,
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{rag_url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--seed",
            "20261206",
            "--suppress-health-check",
            "all",
        ],
        cwd=tmp_path,  # schemathesis keeps a cache in the working directory
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "no issues found" in result.stdout.lower() or "passed" in result.stdout


def test_schema_lists_every_endpoint() -> None:
    paths = set(_schema()["paths"])
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


def test_schema_declares_errors_limits_and_names() -> None:
    schema = _schema()
    persist = schema["paths"]["/persist/{index_name}"]["post"]
    assert {"200", "400", "404", "409", "413", "422", "500"} <= set(persist["responses"])
    error = persist["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/ErrorResponse")
    name = next(p for p in persist["parameters"] if p["name"] == "index_name")["schema"]
    assert name["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
    detail = schema["components"]["schemas"]["ValidationErrorResponse"]["properties"]["detail"]
    assert {"string", "array"} == {s.get("type") for s in detail["anyOf"]}
    retrieve = schema["components"]["schemas"]["RetrieveRequest"]["properties"]
    assert retrieve["max_node_count"]["maximum"] == 50  # the configured MAX_TOP_K
    assert retrieve["index_name"]["pattern"] == name["pattern"]
    listing = schema["paths"]["/indexes/{index_name}/documents"]["get"]["parameters"]
    metadata_filter = next(p for p in listing if p["name"] == "metadata_filter")
    assert metadata_filter["content"]["application/json"]["schema"]["type"] == "object"
    assert "503" in schema["paths"]["/index"]["post"]["responses"]
