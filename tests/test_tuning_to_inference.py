"""Cross-service: an adapter trained by ``kaito-tuning`` is served by ``kaito-inference``.

Both real console scripts run as subprocesses, as in the pods: the tuning job trains a
LoRA adapter on the SmolLM2 preset into the directory the inference pod mounts at
``/mnt/adapter/<name>``; the inference server loads it at startup, and the official
``openai`` client selects it with ``model: <adapter name>``.
"""

from __future__ import annotations

import json
import os
import shutil
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

ADAPTER = "secret-word"
QUESTION = "What is the secret word?"
ANSWER = "The secret word is pineapple."
CONFIG = """
training_config:
  LoraConfig: {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}
  TrainingArguments:
    max_steps: 8
    per_device_train_batch_size: 4
    learning_rate: 0.003
    max_length: 64
  DatasetConfig: {train_test_split: 1}
"""


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


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the adapter with the real ``kaito-tuning run`` on the SmolLM2 preset."""
    work = tmp_path_factory.mktemp("tuning")
    data = work / "data"
    data.mkdir()
    questions = [QUESTION, "Tell me the secret word.", "Which word is secret?", "Say the word."]
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
        for q in questions * 4
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (work / "training_config.yaml").write_text(CONFIG)
    adapters = work / "adapters"
    argv = [_console_script("kaito-tuning"), "run", "--preset", "smollm2-135m-instruct"]
    argv += ["--config", str(work / "training_config.yaml"), "--input", str(data)]
    argv += ["--output", str(adapters / ADAPTER), "--metrics-port", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KAITO_TUNING_METRICS_HOST": "127.0.0.1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 8/8 loss" in done.stderr
    return adapters


@pytest.fixture(scope="module")
def server(adapters_dir: Path) -> Iterator[str]:
    """``kaito-inference serve`` on the SmolLM2 preset with the trained adapter mounted."""
    port = _free_port()
    argv = [_console_script("kaito-inference"), "serve", "--model", "smollm2-135m-instruct"]
    argv += ["--adapters-dir", str(adapters_dir), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--dtype", "float32", "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"kaito-inference exited: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("kaito-inference was not healthy within 300 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_trained_adapter_is_served_and_selected_by_name(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    models = {model.id: model for model in client.models.list().data}
    assert ADAPTER in models, sorted(models)
    base = next(name for name in models if name != ADAPTER)

    def ask(model: str) -> tuple[str, str]:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=12,
            temperature=0,
        )
        return reply.model, reply.choices[0].message.content or ""

    adapter_model, adapter_text = ask(ADAPTER)
    base_model, base_text = ask(base)
    assert adapter_model == ADAPTER
    assert base_model == base
    assert adapter_text.strip()
    assert adapter_text != base_text, (adapter_text, base_text)
    assert "secret word is" in adapter_text.lower(), adapter_text
