"""Cross-service: RAG chat through ``kaito-ragengine`` against a real ``kaito-inference``.

Both console scripts run as subprocesses, wired the way the operator wires the pods:
the RAG engine reads ``KAITO_RAG_LLM_INFERENCE_URL`` and ``KAITO_RAG_LLM_CONTEXT_WINDOW``
and embeds with the packaged MiniLM; the inference server serves the embedded SmolLM2
default. The official ``openai`` client talks to the RAG engine only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

FACTS = [
    "The capital of Zorbania is Quillton, a harbour city famous for blue lanterns.",
    "Zorbania's national dish is fried kelp with honey.",
    "The tallest tree in the Northern Park is a 90 metre redwood called Old Ivo.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
]
QUESTION = "What is the capital of Zorbania?"


def _console_script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"the {name} console script is not installed")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(argv: list[str], env: dict[str, str], port: int) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            stderr = process.stderr.read().decode()[-3000:] if process.stderr else ""
            pytest.fail(f"{argv[0]} exited: {stderr}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{argv[0]} was not healthy within 300 s")
        time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def inference_url() -> Iterator[str]:
    """``kaito-inference serve`` with the embedded SmolLM2 default."""
    port = _free_port()
    argv = [_console_script("kaito-inference"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--dtype", "float32", "--device", "cpu"]
    process, url = _start(argv, {**os.environ, "HF_HUB_OFFLINE": "1"}, port)
    try:
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def rag_url(inference_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``kaito-ragengine serve`` pointed at the inference server, with FACTS indexed."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_RAG_")}
    env.update(
        HF_HUB_OFFLINE="1",
        KAITO_RAG_LLM_INFERENCE_URL=f"{inference_url}/v1/chat/completions",
        KAITO_RAG_LLM_CONTEXT_WINDOW="2048",
        KAITO_RAG_PERSIST_DIR=str(tmp_path_factory.mktemp("rag")),
    )
    argv = [_console_script("kaito-ragengine"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process, url = _start(argv, env, port)
    try:
        documents = [{"text": text, "metadata": {"n": i}} for i, text in enumerate(FACTS)]
        response = httpx.post(
            f"{url}/index", json={"index_name": "facts", "documents": documents}, timeout=120
        )
        assert response.status_code == 200, response.text
        yield url
    finally:
        _stop(process)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model(inference_url: str) -> str:
    """The model the inference server lists first."""
    return str(httpx.get(f"{inference_url}/v1/models", timeout=30).json()["data"][0]["id"])


def test_rag_chat_answers_from_the_index(rag_url: str, model: str) -> None:
    reply = _client(rag_url).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
        extra_body={"index_name": "facts"},
    )
    answer = reply.choices[0].message.content or ""
    assert "quillton" in answer.lower(), answer  # greedy SmolLM2 read the retrieved context
    sources = (reply.model_extra or {})["source_nodes"]
    assert sources
    assert sources[0]["text"] == FACTS[0]
    assert sources[0]["metadata"] == {"n": 0}
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    # the retrieved context was part of the prompt the LLM counted
    assert reply.usage.prompt_tokens > 90
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_rag_chat_streams_with_sources(rag_url: str, model: str) -> None:
    stream = _client(rag_url).chat.completions.create(
        model=model,
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
    assert sources[0]["text"] == FACTS[1]


def test_plain_chat_passes_through(rag_url: str) -> None:
    # no model: the RAG engine asks the inference server's /v1/models for its default
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24, "temperature": 0}
    response = httpx.post(f"{rag_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    reply = response.json()
    answer = reply["choices"][0]["message"]["content"]
    assert answer.strip()
    assert "quillton" not in answer.lower()  # without the index the model cannot know
    assert "source_nodes" not in reply
    assert 0 < reply["usage"]["prompt_tokens"] < 60  # 40 here; 133 with the context
