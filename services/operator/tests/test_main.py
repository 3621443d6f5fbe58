"""``kaito-operator`` as a real process: a fatal start ends it at once with the cause."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _run(env: dict[str, str], tmp_path: Path) -> tuple[int, float, list[str]]:
    script = str(Path(sys.executable).with_name("kaito-operator"))
    started = time.monotonic()
    done = subprocess.run(
        [script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, time.monotonic() - started, done.stderr.strip().splitlines()


@pytest.fixture
def no_cluster(tmp_path: Path) -> dict[str, str]:
    """No kubeconfig, no in-cluster service account: no API server credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "KAITO_OPERATOR"))}
    with socket.socket() as sock:  # a free port for the liveness endpoint
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {**env, "HOME": str(tmp_path), "KAITO_OPERATOR_HEALTH_PORT": str(port)}


def test_no_credentials_end_the_operator_with_the_cause(
    no_cluster: dict[str, str], tmp_path: Path
) -> None:
    code, elapsed, lines = _run(no_cluster, tmp_path)
    assert code == 1, lines
    assert elapsed < 30
    assert lines[-1].startswith("kaito-operator: fatal: ")
    assert "credentials" in lines[-1]
    assert not any(line.startswith("Traceback") for line in lines[-3:])


def test_invalid_settings_end_the_operator_with_the_field(
    no_cluster: dict[str, str], tmp_path: Path
) -> None:
    code, elapsed, lines = _run({**no_cluster, "KAITO_OPERATOR_HEALTH_PORT": "many"}, tmp_path)
    assert code == 1, lines
    assert elapsed < 30
    assert lines[-1].startswith("kaito-operator: fatal: invalid settings")
    assert "health_port" in lines[-1]
