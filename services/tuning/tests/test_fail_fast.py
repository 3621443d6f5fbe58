"""A tuning job that cannot start ends promptly: the real ``python -m kaito_tuning run``
process exits non-zero with the cause as its last stderr line and no traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[3] / "presets" / "tuning"
#: Generous for a busy two-core machine (the failures take 1-15 s here, mostly torch's
#: import); a job that trains instead of failing runs past it and fails the test.
DEADLINE_S = 90.0


def run_job(tmp_path: Path, *options: str) -> tuple[int, float, list[str]]:
    """``kaito-tuning run`` to its end: exit status, seconds, stderr lines."""
    argv = [sys.executable, "-m", "kaito_tuning", "run", "--output", str(tmp_path / "out")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KAITO_TUNING_METRICS_PORT": "0"}
    started = time.monotonic()
    done = subprocess.run(
        [*argv, *options], check=False, env=env, capture_output=True, text=True, timeout=DEADLINE_S
    )
    return done.returncode, time.monotonic() - started, done.stderr.strip().splitlines()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "training_config.yaml"
    path.write_text((TEMPLATES / "lora-params.yaml").read_text())
    return path


def test_an_unreadable_config_exits_2_before_loading_anything(
    tiny_model: Path, chat_data: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-config.yaml"
    status, seconds, stderr = run_job(
        tmp_path, "--model", str(tiny_model), "--config", str(missing), "--input", str(chat_data)
    )
    assert status == 2
    assert seconds < 30
    assert stderr[-1].endswith(
        f"ERROR kaito_tuning: cannot read the training config {missing}: No such file or directory"
    )


def test_a_missing_model_dir_exits_1_naming_it(
    config: Path, chat_data: Path, tmp_path: Path
) -> None:
    model = tmp_path / "no-model"
    status, seconds, stderr = run_job(
        tmp_path, "--model", str(model), "--config", str(config), "--input", str(chat_data)
    )
    assert status == 1
    assert seconds < DEADLINE_S
    assert stderr[-1].endswith(f"ERROR kaito_tuning: --model {model}: no such directory")


def test_truncated_weights_exit_1_with_one_line_and_no_traceback(
    tiny_model: Path, config: Path, chat_data: Path, tmp_path: Path
) -> None:
    model = Path(shutil.copytree(tiny_model, tmp_path / "truncated"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    status, seconds, stderr = run_job(
        tmp_path, "--model", str(model), "--config", str(config), "--input", str(chat_data)
    )
    assert status == 1
    assert seconds < DEADLINE_S
    assert not any(line.startswith("Traceback") for line in stderr)
    cause = f"ERROR kaito_tuning: ModelConfig: cannot load the base model from '{model}': "
    assert cause in stderr[-1]
    assert "SafetensorError" in stderr[-1] or "incomplete metadata" in stderr[-1]


def test_a_taken_metrics_port_exits_1_before_training(
    tiny_model: Path, config: Path, chat_data: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # the job listens on all interfaces by default
        taken.listen()
        port = taken.getsockname()[1]
        status, seconds, stderr = run_job(
            tmp_path,
            *("--model", str(tiny_model), "--config", str(config), "--input", str(chat_data)),
            *("--metrics-port", str(port)),
        )
    assert status == 1
    assert seconds < DEADLINE_S
    assert "ERROR kaito_tuning: cannot serve /metrics on " in stderr[-1]
    assert f":{port}: Address already in use" in stderr[-1]
    assert not (tmp_path / "out").exists()
