"""``kaito-ragengine serve`` as a real process: fail fast at start, drain cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import free_port

SERVE = str(Path(sys.executable).with_name("kaito-ragengine"))


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_RAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **settings)
    return env


def _serve_args(port: int, persist_dir: Path) -> list[str]:
    return [SERVE, "serve", "--host", "127.0.0.1", "--port", str(port),
            "--persist-dir", str(persist_dir)]  # fmt: skip


def _run_to_exit(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, float, str]:
    started = time.monotonic()
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return result.returncode, time.monotonic() - started, result.stderr


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_embedding_model_that_cannot_load_exits_fast(tmp_path: Path) -> None:
    env = _env(KAITO_RAG_EMBEDDING_MODEL_ID=str(tmp_path / "no-such-model"))
    code, elapsed, stderr = _run_to_exit(_serve_args(free_port(), tmp_path / "data"), env, 120)
    assert code == 1, stderr[-3000:]
    assert elapsed < 60, elapsed  # mostly importing torch on a busy 2-core machine
    last = _last_line(stderr)
    assert last.startswith("kaito-ragengine: fatal: embedding model"), stderr[-3000:]
    assert "no-such-model" in last
    assert "could not be loaded" in last


@pytest.mark.parametrize(
    ("relative", "needle"),
    [("blocker", "is not a directory"), ("blocker/data", "cannot be created")],
)
def test_unusable_persistence_directory_exits_fast(
    tmp_path: Path, relative: str, needle: str
) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")
    persist_dir = tmp_path / relative
    code, elapsed, stderr = _run_to_exit(_serve_args(free_port(), persist_dir), _env(), 60)
    assert code == 1, stderr[-3000:]
    assert elapsed < 15, elapsed
    last = _last_line(stderr)
    assert last.startswith(f"kaito-ragengine: fatal: persistence directory {persist_dir}")
    assert needle in last


def test_port_in_use_exits_fast(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, elapsed, stderr = _run_to_exit(_serve_args(port, tmp_path / "data"), _env(), 60)
    assert code == 1, stderr[-3000:]
    assert elapsed < 15, elapsed  # before the model is loaded
    assert _last_line(stderr) == (
        f"kaito-ragengine: fatal: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_invalid_setting_exits_fast(tmp_path: Path) -> None:
    env = _env(KAITO_RAG_SNAPSHOT_RETENTION="many")
    code, elapsed, stderr = _run_to_exit(_serve_args(free_port(), tmp_path / "data"), env, 60)
    assert code == 1, stderr[-3000:]
    assert elapsed < 15, elapsed
    last = _last_line(stderr)
    assert last.startswith("kaito-ragengine: fatal: invalid settings")
    assert "snapshot_retention" in last
    assert "Traceback" not in stderr


@contextmanager
def _server(port: int, persist_dir: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            _serve_args(port, persist_dir), env=_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not become healthy"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


KEEP = [{"text": f"note {i}: the cluster runs pods on node pool {i % 3}."} for i in range(12)]


def test_sigterm_during_indexing_answers_503_and_keeps_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    """Also measures /retrieve on another index while a 60,000-word document is embedded."""
    port, data, log = free_port(), tmp_path / "data", tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    words = " ".join(
        f"paragraph {i} talks about scheduling, storage and networking." for i in range(8000)
    )
    big_result: dict[str, Any] = {}
    with _server(port, data, log) as process:
        keep = httpx.post(
            f"{url}/index", json={"index_name": "keep", "documents": KEEP}, timeout=60
        )
        assert keep.status_code == 200, keep.text

        def index_big() -> None:
            body = {"index_name": "big", "documents": [{"text": words}]}
            response = httpx.post(f"{url}/index", json=body, timeout=300)
            big_result["status"] = response.status_code
            big_result["body"] = response.json()

        writer = threading.Thread(target=index_big)
        writer.start()
        time.sleep(3)  # chunking done, embedding under way
        latencies = []
        for i in range(15):
            started = time.perf_counter()
            hit = httpx.post(
                f"{url}/retrieve",
                json={"index_name": "keep", "query": f"node pool {i % 3}"},
                timeout=60,
            )
            latencies.append(time.perf_counter() - started)
            assert hit.status_code == 200
        assert writer.is_alive(), "the big document finished before SIGTERM; make it bigger"
        p50 = statistics.median(latencies)
        print(f"/retrieve while indexing 60k words: p50 {p50:.3f}s max {max(latencies):.3f}s")
        assert p50 < 2.0, latencies
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        writer.join(timeout=60)
        code = process.wait(timeout=60)
        stopped = time.monotonic() - signalled
    assert big_result["status"] == 503, big_result
    assert "shutting down" in big_result["body"]["detail"]
    assert stopped < 20, stopped  # was 30 s (the graceful timeout) and a 500
    assert code == 0, log.read_text()[-3000:]  # a graceful stop is a clean exit
    assert not list(data.rglob(".tmp-*"))
    with _server(port, data, log):
        assert httpx.get(f"{url}/indexes").json() == ["keep"]
        listed = httpx.get(f"{url}/indexes/keep/documents", params={"limit": 100}).json()
        assert sorted(d["text"] for d in listed["documents"]) == sorted(d["text"] for d in KEEP)


def test_missing_dependency_exits_fast(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "faiss.py").write_text("raise ImportError('faiss is not installed here')\n")
    env = _env(PYTHONPATH=str(shadow))
    code, elapsed, stderr = _run_to_exit(_serve_args(free_port(), tmp_path / "data"), env, 60)
    assert code == 1, stderr[-3000:]
    assert elapsed < 30, elapsed
    assert _last_line(stderr) == (
        "kaito-ragengine: fatal: missing dependency: faiss is not installed here"
    )
