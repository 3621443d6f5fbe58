"""Cross-service: RAG chat through ``kaito-ragengine`` against a real ``kaito-inference``.

The session fixtures (``conftest.py``) run both console scripts wired the way the
operator wires the pods: the RAG engine reads ``KAITO_RAG_LLM_INFERENCE_URL`` and
``KAITO_RAG_LLM_CONTEXT_WINDOW`` and embeds with the packaged MiniLM; the inference server
serves the embedded SmolLM2 default and the adapter the tuning job trained. The official
``openai`` client talks to the RAG engine only. Together with the tuning fixture this is
the whole data plane: tuning produces the adapter, inference serves base and adapter, and
the RAG engine answers through either.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of Zorbania?"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_rag_chat_answers_from_the_index(rag_url: str, known: Any) -> None:
    reply = client(rag_url).chat.completions.create(
        model=known.base_model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
        extra_body={"index_name": "facts"},
    )
    answer = reply.choices[0].message.content or ""
    assert "quillton" in answer.lower(), answer  # greedy SmolLM2 read the retrieved context
    sources = (reply.model_extra or {})["source_nodes"]
    assert sources
    assert sources[0]["text"] == known.facts[0]
    assert sources[0]["metadata"] == {"n": 0}
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    # the retrieved context was part of the prompt the LLM counted
    assert reply.usage.prompt_tokens > 90
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_rag_chat_streams_with_sources(rag_url: str, known: Any) -> None:
    stream = client(rag_url).chat.completions.create(
        model=known.base_model,
        messages=[{"role": "user", "content": "What is the national dish of Zorbania?"}],
        max_tokens=16,
        temperature=0,
        stream=True,
        extra_body={"index_name": "facts"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    sources = (chunks[0].model_extra or {})["source_nodes"]
    assert sources[0]["text"] == known.facts[1]


def test_rag_chat_answers_through_the_trained_adapter(rag_url: str, known: Any) -> None:
    def ask(model: str) -> str:
        reply = client(rag_url).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": known.secret_question}],
            max_tokens=12,
            temperature=0,
            extra_body={"index_name": "facts"},
        )
        assert reply.model == model
        assert (reply.model_extra or {})["source_nodes"]
        return reply.choices[0].message.content or ""

    through_adapter, through_base = ask(known.adapter), ask(known.base_model)
    # the adapter's learned phrasing survives the retrieved context; the base has none
    assert "secret word is" in through_adapter.lower(), through_adapter
    assert through_adapter != through_base, through_base


def test_plain_chat_passes_through(rag_url: str, known: Any) -> None:
    body = {
        "model": known.base_model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 24,
        "temperature": 0,
    }
    response = httpx.post(f"{rag_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    reply = response.json()
    answer = reply["choices"][0]["message"]["content"]
    assert answer.strip()
    assert "quillton" not in answer.lower()  # without the index the model cannot know
    assert "source_nodes" not in reply
    assert 0 < reply["usage"]["prompt_tokens"] < 60  # 40 here; 133 with the context
