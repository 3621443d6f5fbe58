"""Shared fixtures: the tiny model, dataset writers, a loopback HTTP server, a registry."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaito_sdk.tools.localmodels import build_tiny_model

CHAT_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
    }
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (4, 1), (6, 3), (9, 0)]
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a ChatML tokenizer (builds in well under a second)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def chat_data(tmp_path: Path) -> Path:
    """An input directory with one conversational jsonl file."""
    data = tmp_path / "data"
    data.mkdir()
    lines = "\n".join(json.dumps(row) for row in CHAT_ROWS)
    (data / "train.jsonl").write_text(lines + "\n")
    return data


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Route:
    """One canned answer (or a sequence of them, one per request) of the test server."""

    answers: list[tuple[int, dict[str, str], bytes]]
    hits: int = 0
    hosts: list[str] = field(default_factory=list)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 serving :class:`Route`s by path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                route.hosts.append(self.headers.get("Host", ""))
                status, canned, body = route.answers[min(route.hits, len(route.answers) - 1)]
                headers = dict(canned)
                route.hits += 1
                self.send_response(status)
                omit_length = headers.pop("X-Omit-Length", None) is not None
                for key, value in headers.items():
                    self.send_header(key, value)
                if not omit_length and "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)  # HTTP/1.0: without a length, the close ends the body

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, *answers: tuple[int, dict[str, str], bytes]) -> Route:
        """Serve ``answers`` (the last one repeats) at ``path``."""
        route = Route(list(answers))
        self.routes[path] = route
        return route


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """A loopback HTTP server whose answers each test sets up."""
    server = LoopbackServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@dataclass(frozen=True)
class Registry:
    """A running ``docker-registry`` (distribution 2.8)."""

    host: str
    tls: bool
    ca_bundle: str | None
    username: str | None
    password: str | None

    def ref(self, repository: str, tag: str = "v1") -> str:
        """An image reference on this registry."""
        return f"{self.host}/{repository}:{tag}"


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # noqa: PLC0415 - glibc's bcrypt ($2b$), all distribution accepts

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def registry_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Registry]]:
    """Start ``docker-registry`` instances: plain HTTP, or TLS with htpasswd credentials."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(*, auth: bool) -> Registry:
        root = tmp_path_factory.mktemp("registry")
        port = free_port()
        lines = [
            "version: 0.1",
            "log: {level: error}",
            f"storage: {{filesystem: {{rootdirectory: {root / 'storage'}}}}}",
            "http:",
            f"  addr: 127.0.0.1:{port}",
            "  secret: kaito-tests",
        ]
        username = password = ca_bundle = None
        if auth:
            cert, key = _self_signed(root)
            username, password = "alice", "s3cret-pw"
            (root / "htpasswd").write_text(f"{username}:{_bcrypt(password)}\n")
            ca_bundle = str(cert)
            lines += [
                f"  tls: {{certificate: {cert}, key: {key}}}",
                f"auth: {{htpasswd: {{realm: kaito-test, path: {root / 'htpasswd'}}}}}",
            ]
        config = root / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        log = (root / "registry.log").open("wb")
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        processes.append(process)
        scheme = "https" if auth else "http"
        deadline = time.monotonic() + 20
        while True:
            try:
                verify = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
                httpx.get(f"{scheme}://127.0.0.1:{port}/v2/", verify=verify)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"registry did not start: {(root / 'registry.log').read_text()}")
                time.sleep(0.1)
        return Registry(f"127.0.0.1:{port}", auth, ca_bundle, username, password)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
