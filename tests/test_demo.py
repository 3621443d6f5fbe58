"""The main job (``nox -s demo``) answers its question from this project's docs."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("kaito_demo_run", ROOT / "demo" / "run.py")
assert _spec is not None
assert _spec.loader is not None
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def test_demo_answers_with_sources_and_stops_cleanly() -> None:
    """Run as CI runs it: output to a pipe, a narrow 80-column terminal setting."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "COLUMNS": "80"}
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
    assert "README.md §" in sources
    relevances = [float(s) for s in re.findall(r"\(relevance (\d\.\d\d)\)", sources)]
    assert relevances, sources
    assert all(0.0 <= s <= 1.0 for s in relevances)
    assert relevances == sorted(relevances, reverse=True)
    # Every URL is whole on its line, whatever the width.
    endpoints = out.split("endpoints:", 1)[1]
    for url in re.findall(r"http://127\.0\.0\.1:\d+/\S+", endpoints):
        assert url.endswith(("/v1", "/health", "/metrics")), url
    assert len(re.findall(r"http://127\.0\.0\.1:\d+/v1\b", endpoints)) == 2
    # Each phase prints a line stamped with its time.
    stamped = re.findall(r"^\[\s*\d+\.\d s\] (.*)$", out, flags=re.MULTILINE)
    assert any(line.startswith("kaito-inference is healthy after") for line in stamped)
    assert any(line.startswith("indexed ") for line in stamped)
    assert any(line.startswith("answered in ") for line in stamped)
    assert "stopped kaito-ragengine (exit code 0)" in out
    assert "stopped kaito-inference (exit code 0)" in out
    assert out.rstrip().endswith("demo finished")


def test_wait_healthy_fails_at_once_with_the_log_when_the_service_dies(
    tmp_path: Path,
) -> None:
    """A child that exits before it is healthy ends the wait at once, with its last lines."""
    log = tmp_path / "svc.log"
    script = (
        "import sys; print('loading'); "
        "print('fatal: the model cannot load', file=sys.stderr); sys.exit(3)"
    )
    argv = [sys.executable, "-c", script]
    started = time.monotonic()
    with (
        demo.service("svc", argv, dict(os.environ), log) as proc,
        pytest.raises(SystemExit) as raised,
    ):
        demo.wait_healthy("svc", "http://127.0.0.1:9/health", proc, log, timeout_s=120)
    assert time.monotonic() - started < 10  # not the 120 s timeout
    message = str(raised.value.code)
    assert "svc exited with code 3 before it became healthy" in message
    assert message.rstrip().endswith("fatal: the model cannot load")


def test_unwrap_joins_hard_wrapped_paragraphs_and_keeps_blocks() -> None:
    text = textwrap.dedent(
        """\
        ## Heading
        The operator sizes the node count
        from the model and the SKU.

        - a list item
          that wraps
        - another item
        ```bash
        kubectl get
        workspace
        ```
        | a | b |
        | 1 | 2 |"""
    )
    assert demo.unwrap(text.splitlines()) == textwrap.dedent(
        """\
        ## Heading
        The operator sizes the node count from the model and the SKU.

        - a list item that wraps
        - another item
        ```bash
        kubectl get
        workspace
        ```
        | a | b |
        | 1 | 2 |"""
    )
