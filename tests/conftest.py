"""Shared fixtures of the cross-service tests: the real data plane on loopback.

The services run as their real console scripts in subprocesses, wired the way the
operator wires the pods: ``kaito-tuning run`` trains a LoRA adapter on the SmolLM2 preset
into the directory the inference pod mounts at ``/mnt/adapter/<name>``;
``kaito-inference serve`` serves the base model and that adapter; ``kaito-ragengine
serve`` reads ``KAITO_RAG_LLM_INFERENCE_URL`` and answers through the inference server.
One of each runs per test session, shared by every test that asks for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

#: The adapter the session trains, and what it learns to answer.
ADAPTER = "secret-word"
SECRET_QUESTION = "What is the secret word?"
SECRET_ANSWER = "The secret word is pineapple."
#: The base model name the inference server lists for the embedded default.
BASE_MODEL = "smollm2-135m-instruct"
#: Facts the RAG engine indexes (``facts``); the model cannot know them otherwise.
FACTS = [
    "The capital of Zorbania is Quillton, a harbour city famous for blue lanterns.",
    "Zorbania's national dish is fried kelp with honey.",
    "The tallest tree in the Northern Park is a 90 metre redwood called Old Ivo.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
]
TRAINING_CONFIG = """
training_config:
  LoraConfig: {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}
  TrainingArguments:
    max_steps: 8
    per_device_train_batch_size: 4
    learning_rate: 0.003
    max_length: 64
  DatasetConfig: {train_test_split: 1}
"""


@dataclass(frozen=True)
class Known:
    """What the data-plane fixtures train and index, for the tests to ask about."""

    adapter: str = ADAPTER
    secret_question: str = SECRET_QUESTION
    secret_answer: str = SECRET_ANSWER
    base_model: str = BASE_MODEL
    facts: tuple[str, ...] = tuple(FACTS)


def console_script(name: str) -> str:
    """The installed console script ``name`` (beside this Python first, then on PATH)."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"the {name} console script is not installed")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Start ``argv`` and wait until ``/health`` on ``port`` answers 200 (or fail the test)."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            stderr = process.stderr.read().decode()[-3000:] if process.stderr else ""
            pytest.fail(f"{argv[0]} exited: {stderr}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{argv[0]} was not healthy within 300 s")
        time.sleep(0.5)


def stop_service(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a minute."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def free_port_factory() -> Callable[[], int]:
    """:func:`free_port`, for tests that start servers of their own."""
    return free_port


@pytest.fixture(scope="session")
def known() -> Known:
    """The adapter name, its question and answer, the base model and the indexed facts."""
    return Known()


@pytest.fixture(scope="session")
def trained_adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapters directory holding ``secret-word``, trained by the real ``kaito-tuning``."""
    work = tmp_path_factory.mktemp("tuning")
    data = work / "data"
    data.mkdir()
    questions = [SECRET_QUESTION, "Tell me the secret word.", "Which word is secret?"]
    rows = [
        {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": SECRET_ANSWER},
            ]
        }
        for question in [*questions, "Say the word."] * 4
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (work / "training_config.yaml").write_text(TRAINING_CONFIG)
    adapters = work / "adapters"
    argv = [console_script("kaito-tuning"), "run", "--preset", BASE_MODEL]
    argv += ["--config", str(work / "training_config.yaml"), "--input", str(data)]
    argv += ["--output", str(adapters / ADAPTER), "--metrics-port", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KAITO_TUNING_METRICS_HOST": "127.0.0.1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 8/8 loss" in done.stderr
    return adapters


@pytest.fixture(scope="session")
def inference_url(trained_adapters_dir: Path) -> Iterator[str]:
    """``kaito-inference serve`` on the SmolLM2 preset with the trained adapter mounted."""
    port = free_port()
    argv = [console_script("kaito-inference"), "serve", "--model", BASE_MODEL]
    argv += ["--adapters-dir", str(trained_adapters_dir)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--device", "cpu"]
    process = start_service(argv, {**os.environ, "HF_HUB_OFFLINE": "1"}, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)


@pytest.fixture(scope="session")
def rag_url(inference_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``kaito-ragengine serve`` answering through the inference server, FACTS indexed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_RAG_")}
    env.update(
        HF_HUB_OFFLINE="1",
        KAITO_RAG_LLM_INFERENCE_URL=f"{inference_url}/v1/chat/completions",
        KAITO_RAG_LLM_CONTEXT_WINDOW="2048",
        KAITO_RAG_PERSIST_DIR=str(tmp_path_factory.mktemp("rag")),
    )
    argv = [console_script("kaito-ragengine"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = start_service(argv, env, port)
    try:
        documents = [{"text": text, "metadata": {"n": i}} for i, text in enumerate(FACTS)]
        response = httpx.post(
            f"http://127.0.0.1:{port}/index",
            json={"index_name": "facts", "documents": documents},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)
