"""Fixtures: a deterministic embedder, app clients with lifespan, and real loopback servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from kaito_ragengine.app import create_app
from kaito_ragengine.embeddings.base import normalize
from kaito_ragengine.settings import Settings

DIM = 64
_WORD = re.compile(r"\w+")


def hashing_vectors(texts: list[str], dim: int = DIM) -> np.ndarray:
    """Bag-of-words vectors hashed into ``dim`` buckets: shared words mean high cosine."""
    matrix = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            bucket = int.from_bytes(
                hashlib.blake2b(word.encode(), digest_size=4).digest(), "little"
            )
            matrix[row, bucket % dim] += 1.0
    return normalize(matrix)


class HashingEmbedder:
    """A deterministic, model-free embedder for fast API tests."""

    model_id = "test-hashing-64"

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        await asyncio.sleep(0)
        return hashing_vectors(texts)

    async def aclose(self) -> None:
        return None


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings isolated from the environment, persisting under ``tmp_path``."""
    values: dict[str, Any] = {"persist_dir": str(tmp_path / "data"), "host": "127.0.0.1"}
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and yield an in-process client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rag") as client:
            yield client


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest_asyncio.fixture
async def client(tmp_path: Path, embedder: HashingEmbedder) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(tmp_path, snapshot_on_shutdown=False), embedder=embedder)
    async with running_app(app) as c:
        yield c


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def fake_llm_app(records: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible chat server that echoes what it was asked, for real HTTP tests.

    The answer names the model, temperature and max_tokens it received, the last user
    message and whether a context system message came; usage counts words.
    """
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": "fake-llm", "object": "model", "owned_by": "test"}],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        body = await request.json()
        records.append({"body": body, "auth": request.headers.get("authorization")})
        delay = (
            float(body.get("metadata", {}).get("delay", 0))
            if isinstance(body.get("metadata"), dict)
            else 0
        )
        await asyncio.sleep(delay)
        messages = body["messages"]
        user = [m["content"] for m in messages if m.get("role") == "user"]
        system = " ".join(str(m["content"]) for m in messages if m.get("role") == "system")
        text = (
            f"model={body.get('model')} temperature={body.get('temperature')} "
            f"max_tokens={body.get('max_tokens')} tools={len(body.get('tools') or [])} "
            f"context={'Context:' in system} question={user[-1] if user else ''}"
        )
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        }
        if body.get("stream"):

            async def events() -> AsyncIterator[str]:
                base = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": body.get("model"),
                }
                for i, word in enumerate(text.split(" ")):
                    delta = {"content": word if i == 0 else " " + word}
                    if i == 0:
                        delta["role"] = "assistant"
                    chunk = {
                        **base,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                done = {
                    **base,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": usage,
                }
                yield f"data: {json.dumps(done)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        if body.get("temperature") == -1:
            return JSONResponse({"error": {"message": "temperature must be >= 0"}}, status_code=400)
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": usage,
            }
        )

    return app


@pytest.fixture
def llm_records() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def fake_llm(llm_records: list[dict[str, Any]]) -> Iterator[ServerThread]:
    with ServerThread(fake_llm_app(llm_records)) as server:
        yield server


def fake_embeddings_app(token: str, seen: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible ``/v1/embeddings`` server that demands a Bearer token."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"error": {"message": "bad token"}}, status_code=401)
        body = await request.json()
        seen.append(body)
        vectors = hashing_vectors(list(body["input"]), 32) * 3.0  # unnormalised on purpose
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
        return JSONResponse(
            {"object": "list", "data": list(reversed(data)), "model": body["model"]}
        )

    return app
