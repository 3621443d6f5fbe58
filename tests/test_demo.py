"""The main job (``nox -s demo``) answers its question from this project's docs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_demo_answers_with_sources_and_stops_cleanly() -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-4000:]
    answer = out.split("answer", 1)[1].split("top sources", 1)[0]
    assert "FAISS" in answer
    sources = out.split("top sources", 1)[1].split("usage:", 1)[0]
    assert "README.md" in sources
    assert "/v1" in out.split("endpoints", 1)[1]
    assert "stopped kaito-ragengine (exit code 0)" in out
    assert "stopped kaito-inference (exit code 0)" in out
    assert out.rstrip().endswith("demo finished")
