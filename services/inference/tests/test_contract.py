"""The OpenAI contract, run with the official openai client against both runtimes on SmolLM2.

One server per runtime per module. The transformers runtime runs in-process (uvicorn in a
thread) so the test can read the batch sizes it ran; the vLLM runtime runs as
``kaito-inference serve --runtime vllm`` in a subprocess and only in ``nox -s vllm``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaito_inference.app import create_app
from kaito_inference.settings import InferenceSettings
from kaito_inference.testing import make_lora_adapter, serve_app, wait_healthy

pytestmark = pytest.mark.slow

NAME = "smollm2"
ADAPTER = "smol-lora"
#: A question whose greedy answer does not hang on a near tie: "What is the capital of
#: France?" alone starts "The" 0.08 nats ahead of "L" in SmolLM2's float32 forward, and on
#: an AMD EPYC with AVX-512 BF16 (no AMX) the served bfloat16 prefill tipped it into
#: "L'Étoile, la Marseillaise, ..."; asked for one sentence, every step of "The capital of
#: France is Paris" leads by 1.4 nats or more.
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
COUNTING = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]


@dataclass
class Server:
    """A running server under test."""

    runtime: str
    url: str
    health_seen: list[int]
    app: Any = None  # the FastAPI app (transformers runtime only)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def aclient(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("smol-adapters")
    make_lora_adapter(smollm2_dir, root / ADAPTER, seed=3, rank=8)
    return root


@pytest.fixture(
    scope="module",
    params=["transformers", pytest.param("vllm", marks=pytest.mark.vllm)],
)
def server(
    request: pytest.FixtureRequest, smollm2_dir: Path, adapters_dir: Path
) -> Iterator[Server]:
    if request.param == "transformers":
        settings = InferenceSettings(
            model=str(smollm2_dir), served_model_name=NAME, adapters_dir=adapters_dir
        )
        app = create_app(settings)
        with serve_app(app) as url:
            yield Server("transformers", url, wait_healthy(url, timeout=300), app)
        return
    port = _free_port()
    command = [
        sys.executable, "-m", "kaito_inference.cli", "serve", "--runtime", "vllm",
        "--model", str(smollm2_dir), "--served-model-name", NAME, "--host", "127.0.0.1",
        "--port", str(port), "--adapters-dir", str(adapters_dir),
    ]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        yield Server("vllm", url, wait_healthy(url, timeout=600))
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def chat(server: Server, messages: list[dict[str, str]], **options: Any) -> Any:
    settings: dict[str, Any] = {"max_tokens": 32, "temperature": 0, **options}
    return server.client().chat.completions.create(model=NAME, messages=messages, **settings)


def test_health_comes_after_loading(server: Server) -> None:
    assert server.health_seen[-1] == 200
    if server.runtime == "transformers":  # the app answers while the model loads
        assert server.health_seen[0] == 503


def test_models_list(server: Server) -> None:
    assert NAME in [m.id for m in server.client().models.list().data]


def test_chat_answers_and_counts_usage(server: Server) -> None:
    reply = chat(server, QUESTION)
    choice = reply.choices[0]
    assert "Paris" in (choice.message.content or "")
    assert choice.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 10
    assert 1 <= reply.usage.completion_tokens < 32
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_tokens_gives_length(server: Server) -> None:
    reply = chat(server, COUNTING, max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5


def test_stream_matches_non_stream_with_usage(server: Server) -> None:
    expected = chat(server, QUESTION).choices[0].message.content
    stream = chat(server, QUESTION, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence(server: Server, stream: bool) -> None:
    full = chat(server, COUNTING).choices[0].message.content
    assert "4" in full
    reply = chat(server, COUNTING, stop=["4"], stream=stream)
    if stream:
        chunks = [c for c in reply if c.choices]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
    assert text == full[: full.index("4")]
    assert finish == "stop"


def test_completions_plain_and_streamed(server: Server) -> None:
    client = server.client()
    options: dict[str, Any] = {
        "model": NAME,
        "prompt": "The capital of France is",
        "temperature": 0,
    }
    reply = client.completions.create(max_tokens=8, **options)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8
    text = reply.choices[0].text
    assert text.strip()
    streamed = client.completions.create(max_tokens=8, stream=True, **options)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text


def test_seeded_sampling_repeats(server: Server) -> None:
    def sample() -> str:
        return (
            chat(server, COUNTING, temperature=1.0, seed=1234, max_tokens=16)
            .choices[0]
            .message.content
        )

    assert sample() == sample()


def test_unknown_model_is_404(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        server.client().chat.completions.create(model="missing", messages=QUESTION)
    assert err.value.status_code == 404


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": -1},
        {"max_tokens": 10_000_000},
        {"messages": []},
        {"top_p": 5},
        {"n": 2, "temperature": 0},
    ],
)
def test_invalid_values_are_400(server: Server, options: dict[str, Any]) -> None:
    payload = {"model": NAME, "messages": QUESTION, **options}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=payload, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]


def test_sixteen_concurrent_streams_complete_and_batch(server: Server) -> None:
    prompts = [f"Tell me one fact about the number {i}." for i in range(16)]

    async def one(client: openai.AsyncOpenAI, prompt: str) -> tuple[str, str | None]:
        stream = await client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        parts, finish = [], None
        async for chunk in stream:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        return "".join(parts), finish

    async def run_all() -> list[tuple[str, str | None]]:
        client = server.aclient()
        return await asyncio.gather(*(one(client, p) for p in prompts))

    results = asyncio.run(run_all())
    assert all(text.strip() and finish in {"stop", "length"} for text, finish in results)
    # Batched results equal the same requests served alone (greedy decoding).
    for i in (0, 7, 15):
        alone = chat(server, [{"role": "user", "content": prompts[i]}], max_tokens=24)
        assert alone.choices[0].message.content == results[i][0]
    if server.runtime == "transformers":
        sizes = server.app.state.engine.batcher.stats.decode_batch_sizes
        assert max(sizes) >= 8, sizes


def test_adapter_changes_only_its_requests(server: Server) -> None:
    assert ADAPTER in [m.id for m in server.client().models.list().data]
    base = chat(server, QUESTION).choices[0].message.content
    adapted = server.client().chat.completions.create(
        model=ADAPTER, messages=QUESTION, max_tokens=32, temperature=0
    )
    assert adapted.choices[0].message.content != base
    assert chat(server, QUESTION).choices[0].message.content == base
