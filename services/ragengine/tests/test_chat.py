"""Chat completions against a real loopback OpenAI-compatible server, via the openai client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionToolParam

from kaito_ragengine.app import create_app

from .conftest import HashingEmbedder, ServerThread, make_settings, running_app

pytestmark = pytest.mark.asyncio

DOCS = [
    {
        "text": "The Eiffel Tower is in Paris and was finished in 1889.",
        "metadata": {"kind": "fact"},
    },
    {"text": "Mount Fuji is the highest mountain in Japan.", "metadata": {"kind": "fact"}},
    {"text": "Bananas are rich in potassium.", "metadata": {"kind": "food"}},
]


@pytest_asyncio.fixture
async def rag(
    tmp_path: Path, fake_llm: ServerThread, embedder: HashingEmbedder
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path,
        llm_inference_url=f"{fake_llm.url}/v1/chat/completions",
        llm_context_window=2048,
        llm_access_secret="llm-token",
        snapshot_on_shutdown=False,
    )
    async with running_app(create_app(settings, embedder=embedder)) as client:
        response = await client.post("/index", json={"index_name": "facts", "documents": DOCS})
        assert response.status_code == 200
        yield client


def _openai(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://rag/v1", api_key="unused", http_client=client)


async def test_passthrough_without_index(
    rag: httpx.AsyncClient, llm_records: list[dict[str, Any]]
) -> None:
    completion = await _openai(rag).chat.completions.create(
        model="fake-llm", messages=[{"role": "user", "content": "hello"}], temperature=0.3
    )
    assert completion.choices[0].message.content is not None
    assert "question=hello" in completion.choices[0].message.content
    assert "context=False" in completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert llm_records[-1]["body"]["messages"] == [{"role": "user", "content": "hello"}]
    assert llm_records[-1]["auth"] == "Bearer llm-token"
    assert "index_name" not in llm_records[-1]["body"]


async def test_rag_path_adds_context_and_source_nodes(
    rag: httpx.AsyncClient, llm_records: list[dict[str, Any]]
) -> None:
    completion = await _openai(rag).chat.completions.create(
        model="fake-llm",
        messages=[{"role": "user", "content": "Where is the Eiffel Tower?"}],
        max_tokens=50,
        extra_body={"index_name": "facts"},
    )
    content = completion.choices[0].message.content or ""
    assert "context=True" in content
    assert "max_tokens=50" in content
    sources = (completion.model_extra or {})["source_nodes"]
    assert sources[0]["text"] == DOCS[0]["text"]
    assert set(sources[0]) == {"doc_id", "node_id", "text", "score", "metadata"}
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 5
    sent = llm_records[-1]["body"]
    assert sent["messages"][0]["role"] == "system"
    assert "Eiffel Tower is in Paris" in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": "Where is the Eiffel Tower?"}
    assert "index_name" not in sent
    assert "context_token_ratio" not in sent


async def test_rag_path_streams_with_source_nodes(rag: httpx.AsyncClient) -> None:
    stream = await _openai(rag).chat.completions.create(
        model="fake-llm",
        messages=[{"role": "user", "content": "highest mountain in Japan?"}],
        stream=True,
        extra_body={"index_name": "facts"},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "context=True" in text
    assert "question=highest mountain in Japan?" in text
    sources = (chunks[0].model_extra or {})["source_nodes"]
    assert sources[0]["text"] == DOCS[1]["text"]
    assert chunks[-1].usage is not None


async def test_passthrough_streams(rag: httpx.AsyncClient) -> None:
    stream = await _openai(rag).chat.completions.create(
        model="fake-llm", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "question=hi" in text


async def test_tools_pass_through(
    rag: httpx.AsyncClient, llm_records: list[dict[str, Any]]
) -> None:
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    completion = await _openai(rag).chat.completions.create(
        model="fake-llm",
        messages=[{"role": "user", "content": "use a tool"}],
        tools=tools,
        extra_body={"index_name": "facts"},
    )
    assert "tools=1" in (completion.choices[0].message.content or "")
    assert llm_records[-1]["body"]["tools"] == tools
    assert "source_nodes" not in (completion.model_extra or {})


async def test_default_model_comes_from_the_llm(
    rag: httpx.AsyncClient, llm_records: list[dict[str, Any]]
) -> None:
    response = await rag.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 200
    assert llm_records[-1]["body"]["model"] == "fake-llm"


async def test_concurrent_requests_keep_their_own_parameters(rag: httpx.AsyncClient) -> None:
    client = _openai(rag)

    async def ask(i: int) -> str:
        completion = await client.chat.completions.create(
            model=f"model-{i}",
            messages=[{"role": "user", "content": f"question {i} about Paris"}],
            temperature=i / 10,
            max_tokens=10 + i,
            metadata={"delay": str((8 - i) / 100)},
            extra_body={"index_name": "facts"} if i % 2 else {},
        )
        return completion.choices[0].message.content or ""

    answers = await asyncio.gather(*(ask(i) for i in range(8)))
    for i, answer in enumerate(answers):
        assert f"model=model-{i} temperature={i / 10} max_tokens={10 + i}" in answer
        assert f"question=question {i} about Paris" in answer
        assert f"context={bool(i % 2)}" in answer


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"messages": [{"role": "user", "content": "q"}], "index_name": "nope"}, 404, "nope"),
        ({"messages": [{"role": "user", "content": "q"}], "index_name": "../x"}, 422, "index_name"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "index_name": "facts",
            },
            400,
            "end with a user message",
        ),
        (
            {"messages": [{"role": "user", "content": "word " * 3000}], "index_name": "facts"},
            400,
            "context window",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}], "temperature": -1},
            400,
            "temperature must be",
        ),
    ],
)
async def test_chat_errors(
    rag: httpx.AsyncClient, body: dict[str, Any], status: int, needle: str
) -> None:
    response = await rag.post("/v1/chat/completions", json={"model": "fake-llm", **body})
    assert response.status_code == status, response.text
    assert needle in response.text


async def test_without_llm_chat_is_503(tmp_path: Path, embedder: HashingEmbedder) -> None:
    app = create_app(make_settings(tmp_path, snapshot_on_shutdown=False), embedder=embedder)
    async with running_app(app) as client:
        response = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}
        )
        assert response.status_code == 503
        assert "retrieve-only" in response.json()["detail"]


async def test_unreachable_llm_is_502(tmp_path: Path, embedder: HashingEmbedder) -> None:
    settings = make_settings(
        tmp_path,
        llm_inference_url="http://127.0.0.1:9/v1",
        llm_context_window=512,
        snapshot_on_shutdown=False,
    )
    async with running_app(create_app(settings, embedder=embedder)) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "q"}]},
        )
        assert response.status_code == 502
        assert "unreachable" in response.json()["detail"]
