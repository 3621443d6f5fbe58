"""``kaito up`` runs a Workspace's workload with the real service console scripts.

Tuning trains a LoRA adapter on a tiny local model into a local directory; inference then
serves that model (and the adapter, linked from a hostPath volume) on a local port, asked
through the official ``openai`` client.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from kaito_sdk.tools.localmodels import build_tiny_model

SELECTOR = {"labelSelector": {"matchLabels": {"apps": "local"}}}
CONFIG = """
training_config:
  LoraConfig: {r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}
  TrainingArguments: {max_steps: 3, per_device_train_batch_size: 2, max_length: 32}
  DatasetConfig: {train_test_split: 1}
"""


def kaito() -> str:
    return str(Path(sys.executable).with_name("kaito"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manifest(path: Path, body: dict[str, object]) -> Path:
    document = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": path.stem},
        "resource": SELECTOR,
    } | body
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """``kaito up`` of a tuning Workspace writes an adapter to --output."""
    work = tmp_path_factory.mktemp("up-tuning")
    data = work / "data"
    data.mkdir()
    counts = [" ".join(map(str, range(n))) for n in range(2, 10)]
    rows = [{"prompt": f"Count to {n}.", "completion": c} for n, c in enumerate(counts, 2)]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (work / "training_config.yaml").write_text(CONFIG)
    ws = manifest(
        work / "tune-tiny.yaml",
        {
            "tuning": {
                "preset": {"name": "smollm2-135m-instruct"},
                "method": "lora",
                "input": {"volumeSource": {"hostPath": {"path": str(data)}}},
                "output": {"volumeSource": {"emptyDir": {}}},
            }
        },
    )
    output = work / "adapter"
    argv = [kaito(), "up", str(ws), "--model-dir", str(tiny_model), "--output", str(output)]
    argv += ["--config", str(work / "training_config.yaml"), "--workdir", str(work / "w")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KAITO_TUNING_METRICS_PORT": "0"}
    env["KAITO_TUNING_METRICS_HOST"] = "127.0.0.1"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"adapter written to {output}" in done.stdout
    assert (output / "adapter_config.json").is_file()
    assert (output / "adapter_model.safetensors").is_file()
    return output


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.usefixtures("sigint_raises")  # kaito up must not inherit SIGINT ignored
def test_up_serves_the_model_and_the_hostpath_adapter(
    tmp_path: Path, tiny_model: Path, adapter: Path, stop: signal.Signals
) -> None:
    port = free_port()
    source = {"name": "counting", "volumeSource": {"hostPath": {"path": str(adapter)}}}
    ws = manifest(
        tmp_path / "serve-tiny.yaml",
        {
            "metadata": {
                "name": "serve-tiny",
                "annotations": {"kaito.sh/runtime": "transformers"},
            },
            "inference": {
                "preset": {"name": "smollm2-135m-instruct"},
                "adapters": [{"source": source, "strength": "1.0"}],
            },
        },
    )
    argv = [kaito(), "up", str(ws), "--model-dir", str(tiny_model), "--port", str(port)]
    argv += ["--workdir", str(tmp_path / "w")]
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    try:
        # The first start on a machine compiles the decode step (--compile-decode auto).
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("kaito up did not serve within 300 s:\n" + log.read_text()[-3000:])
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        ids = {model.id for model in client.models.list().data}
        assert ids == {"smollm2-135m-instruct", "counting"}
        reply = client.completions.create(model="counting", prompt="Count to 3.", max_tokens=4)
        assert reply.usage is not None
        assert reply.usage.completion_tokens >= 1
        deadline = time.monotonic() + 5  # the ready line comes from kaito up's own poller
        while "ready: serve-tiny serves at" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"ready: serve-tiny serves at http://127.0.0.1:{port}/v1 after" in log.read_text()
    finally:
        # The signal goes to kaito up alone (as a supervisor or `kill` sends it), not to
        # its process group: kaito up must pass it on to the server.
        proc.send_signal(stop)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 128 + stop, log.read_text()[-3000:]
    with pytest.raises(httpx.ConnectError):  # the server ended with kaito up
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_up_ends_at_once_with_the_cause_when_the_server_cannot_start(tmp_path: Path) -> None:
    """A model directory that cannot load: kaito up exits non-zero within seconds and
    repeats the server's last lines (the cause) after its own error line."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    ws = manifest(
        tmp_path / "broken.yaml",
        {"inference": {"preset": {"name": "smollm2-135m-instruct"}}},
    )
    argv = [kaito(), "up", str(ws), "--model-dir", str(broken), "--port", str(free_port())]
    argv += ["--workdir", str(tmp_path / "w")]
    started = time.monotonic()
    done = subprocess.run(
        argv,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert elapsed < 60, elapsed
    assert "error: kaito-inference exited with code" in done.stderr
    assert "config.json" in done.stderr.split("its last lines:", 1)[1]
    assert "ready:" not in done.stdout
