"""Fatal startup errors end the real ``kaito-inference serve`` process within seconds, with
exit status 1 and the cause as the last line on stderr (a pod's crash loop shows why)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kaito_inference.cli import build_parser, main, settings_from_args
from kaito_inference.settings import InferenceSettings

#: Generous for a busy two-core machine: the failures take 1-12 s here (torch's import is
#: most of it); a server that stays up is killed by the timeout and fails the test.
DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(model: Path, port: int) -> tuple[int, float, list[str]]:
    """Run ``kaito-inference serve`` to its end: exit status, seconds, stderr lines."""
    argv = [sys.executable, "-m", "kaito_inference.cli", "serve", "--model", str(model)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--adapters-dir", "/nonexistent"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.monotonic()
    done = subprocess.run(
        argv, check=False, env=env, capture_output=True, text=True, timeout=DEADLINE_S
    )
    return done.returncode, time.monotonic() - started, done.stderr.strip().splitlines()


def missing_dir(_tiny: Path, tmp: Path) -> Path:
    return tmp / "no-such-model"


def bad_config_json(tiny: Path, tmp: Path) -> Path:
    model = Path(shutil.copytree(tiny, tmp / "bad-config"))
    (model / "config.json").write_text('{"model_type": "llama",')
    return model


def truncated_weights(tiny: Path, tmp: Path) -> Path:
    model = Path(shutil.copytree(tiny, tmp / "truncated"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return model


def not_in_the_cache(_tiny: Path, _tmp: Path) -> Path:
    return Path("kaito-tests/not-in-the-cache")  # an HF id; offline, so never downloaded


@pytest.mark.parametrize(
    ("breaks", "cause"),
    [
        (bad_config_json, "config.json' is not a valid JSON file"),
        (truncated_weights, "SafetensorError"),
        (not_in_the_cache, "OSError: We couldn't connect to 'https://huggingface.co'"),
    ],
)
def test_a_model_that_cannot_load_ends_the_process(
    tiny_model_dir: Path, tmp_path: Path, breaks: Callable[[Path, Path], Path], cause: str
) -> None:
    status, seconds, stderr = serve(breaks(tiny_model_dir, tmp_path), free_port())
    assert status == 1
    assert seconds < DEADLINE_S
    assert stderr[-1].startswith("kaito-inference: error: the model failed to load: ")
    assert cause in stderr[-1]


def test_a_missing_model_dir_ends_the_process_at_once(tmp_path: Path) -> None:
    status, seconds, stderr = serve(missing_dir(tmp_path, tmp_path), free_port())
    assert status == 1
    assert seconds < 10  # checked before the port is bound and torch imported
    assert stderr[-1] == (
        f"kaito-inference: error: --model {tmp_path / 'no-such-model'}: no such directory"
    )


def test_a_taken_port_ends_the_process_before_loading(tiny_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, seconds, stderr = serve(tiny_model_dir, port)
    assert status == 1
    assert seconds < 10  # the port is bound before torch is imported
    assert stderr[-1].startswith(f"kaito-inference: error: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in stderr[-1]


def test_the_body_limit_is_a_flag_and_an_env_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*argv: str) -> InferenceSettings:
        return settings_from_args(build_parser().parse_args(["serve", *argv]))

    assert parse().max_request_body_bytes == 16 * 2**20
    monkeypatch.setenv("KAITO_INFERENCE_MAX_REQUEST_BODY_BYTES", "2048")
    assert parse().max_request_body_bytes == 2048
    assert parse("--max-request-body-bytes", "4096").max_request_body_bytes == 4096


def test_a_too_small_body_limit_is_refused_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--max-request-body-bytes", "10"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--max-request-body-bytes (KAITO_INFERENCE_MAX_REQUEST_BODY_BYTES)" in err
    assert "1024" in err
