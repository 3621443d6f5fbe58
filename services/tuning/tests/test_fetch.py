"""``kaito-tuning fetch`` against a real loopback HTTP server (loopback allowed explicitly)."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaito_tuning.__main__ import main
from kaito_tuning.fetch import FetchError, fetch_all, fetch_url, redact
from kaito_tuning.settings import TuningSettings

from .conftest import LoopbackServer

JSONL = b'{"text": "hello"}\n{"text": "world"}\n'
JSON_TYPE = {"Content-Type": "application/json"}


def _settings(**overrides: Any) -> TuningSettings:
    values: dict[str, Any] = {
        "fetch_allow_loopback": True,
        "fetch_backoff_s": 0.01,
        "fetch_retries": 2,
        "log_interval_s": 0.0,
    }
    values.update(overrides)
    return TuningSettings(**values)


def test_default_settings_refuse_loopback(http_server: Any, tmp_path: Path) -> None:
    assert TuningSettings().fetch_allow_loopback is False
    route = http_server.add("/train.jsonl", (200, JSON_TYPE, JSONL))
    with pytest.raises(FetchError) as caught:
        fetch_url(http_server.url("/train.jsonl"), tmp_path, settings=TuningSettings())
    assert str(caught.value) == (
        f"{http_server.url('/train.jsonl')} is not allowed (address): "
        "loopback address 127.0.0.1 is not public"
    )
    assert route.hits == 0
    assert list(tmp_path.iterdir()) == []


def test_downloads_with_progress_log(
    http_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http_server.add("/data/train.jsonl", (200, {"Content-Type": "application/x-ndjson"}, JSONL))
    with caplog.at_level(logging.INFO, logger="kaito_tuning.fetch"):
        path = fetch_url(
            http_server.url("/data/train.jsonl?sig=SECRET"), tmp_path, settings=_settings()
        )
    assert path == tmp_path / "train.jsonl"
    assert path.read_bytes() == JSONL
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]
    assert "fetched 0.0 MiB of 0.0 MiB" in caplog.text
    assert "MiB/s" in caplog.text
    assert "SECRET" not in caplog.text


def test_retries_server_errors_then_succeeds(http_server: Any, tmp_path: Path) -> None:
    route = http_server.add(
        "/a.csv",
        (503, {}, b"busy"),
        (429, {}, b"slow down"),
        (200, {"Content-Type": "text/csv; charset=utf-8"}, b"text\nhi\n"),
    )
    path = fetch_url(http_server.url("/a.csv"), tmp_path, settings=_settings())
    assert route.hits == 3
    assert path.read_text() == "text\nhi\n"


def test_gives_up_after_the_retries(http_server: Any, tmp_path: Path) -> None:
    route = http_server.add("/a.csv", (500, {}, b"broken"))
    with pytest.raises(FetchError) as caught:
        fetch_url(http_server.url("/a.csv"), tmp_path, settings=_settings(fetch_retries=1))
    assert str(caught.value) == f"{http_server.url('/a.csv')}: HTTP 500 (gave up after 2 attempts)"
    assert route.hits == 2


def test_client_errors_are_not_retried(http_server: Any, tmp_path: Path) -> None:
    route = http_server.add("/gone.csv", (403, {}, b"no"))
    with pytest.raises(FetchError, match=r"/gone.csv: HTTP 403$"):
        fetch_url(http_server.url("/gone.csv"), tmp_path, settings=_settings())
    assert route.hits == 1


def test_html_is_refused(http_server: Any, tmp_path: Path) -> None:
    http_server.add("/login", (200, {"Content-Type": "text/html"}, b"<html>sign in</html>"))
    with pytest.raises(FetchError) as caught:
        fetch_url(http_server.url("/login"), tmp_path, settings=_settings())
    assert str(caught.value).startswith(
        f"{http_server.url('/login')}: content type 'text/html' is not a dataset (allowed: text/csv"
    )
    assert list(tmp_path.iterdir()) == []


def test_size_limit_from_content_length(http_server: Any, tmp_path: Path) -> None:
    http_server.add("/big.jsonl", (200, JSON_TYPE, JSONL))
    with pytest.raises(FetchError) as caught:
        fetch_url(http_server.url("/big.jsonl"), tmp_path, settings=_settings(fetch_max_bytes=10))
    assert str(caught.value) == (
        f"{http_server.url('/big.jsonl')}: {len(JSONL)} bytes is over the size limit of 10 bytes"
    )


def test_size_limit_while_streaming(http_server: Any, tmp_path: Path) -> None:
    body = b"x" * 3_000_000
    http_server.add("/stream.bin", (200, {"X-Omit-Length": "1"}, body))
    settings = _settings(fetch_max_bytes=1_000_000)
    with pytest.raises(FetchError, match="more than the size limit of 1000000 bytes"):
        fetch_url(http_server.url("/stream.bin"), tmp_path, settings=settings)
    assert list(tmp_path.iterdir()) == []
    path = fetch_url(http_server.url("/stream.bin"), tmp_path, settings=_settings())
    assert path.stat().st_size == len(body)


def test_redirect_is_followed_and_rechecked(http_server: Any, tmp_path: Path) -> None:
    http_server.add("/old", (302, {"Location": "/new/data.json"}, b""))
    http_server.add("/new/data.json", (200, JSON_TYPE, b'[{"text": "x"}]'))
    path = fetch_url(http_server.url("/old"), tmp_path, settings=_settings())
    assert path.name == "old.json"
    assert path.read_bytes() == b'[{"text": "x"}]'

    http_server.add("/evil", (302, {"Location": "http://169.254.169.254/latest/"}, b""))
    with pytest.raises(FetchError) as caught:
        fetch_url(http_server.url("/evil"), tmp_path, settings=_settings())
    assert str(caught.value).startswith("http://169.254.169.254/latest/ is not allowed (")


def test_too_many_redirects(http_server: Any, tmp_path: Path) -> None:
    http_server.add("/loop", (302, {"Location": "/loop"}, b""))
    with pytest.raises(FetchError, match="more than 2 redirects"):
        fetch_url(http_server.url("/loop"), tmp_path, settings=_settings(fetch_max_redirects=2))


@pytest.mark.parametrize(
    ("address", "rule"),
    [("10.1.2.3", "address"), ("169.254.169.254", "metadata"), ("192.168.0.9", "address")],
)
def test_names_resolving_to_private_addresses_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, address: str, rule: str
) -> None:
    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "data.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(FetchError) as caught:
        fetch_url("https://data.example.com/train.jsonl", tmp_path, settings=_settings())
    message = str(caught.value)
    assert message.startswith(f"https://data.example.com/train.jsonl is not allowed ({rule}):")
    assert message.endswith(f"(resolved data.example.com to {address})")


def test_connection_is_pinned_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, http_server: Any, tmp_path: Path
) -> None:
    """The name is resolved once, by the guard; the request goes to that address."""
    answers = iter(["127.0.0.1", "10.0.0.1"])  # a rebinding resolver: second answer differs
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "rebind.example":  # the IP literal the client connects to
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    route = http_server.add("/d.jsonl", (200, JSON_TYPE, JSONL))
    url = f"http://rebind.example:{http_server.port}/d.jsonl"
    path = fetch_url(url, tmp_path, settings=_settings())
    assert path.read_bytes() == JSONL
    assert route.hosts == [f"rebind.example:{http_server.port}"]


def test_unsafe_url_forms(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="only http and https URLs with a host are fetched"):
        fetch_url("file:///etc/passwd", tmp_path, settings=_settings())


def test_fetch_all_keeps_distinct_names(http_server: Any, tmp_path: Path) -> None:
    http_server.add("/a/train.jsonl", (200, JSON_TYPE, b'{"text": "a"}\n'))
    http_server.add("/b/train.jsonl", (200, JSON_TYPE, b'{"text": "b"}\n'))
    http_server.add("/c/..%2F..%2Fescape", (200, {}, b'{"text": "c"}\n'))
    paths = fetch_all(
        [
            http_server.url("/a/train.jsonl"),
            http_server.url("/b/train.jsonl"),
            http_server.url("/c/..%2F..%2Fescape"),
        ],
        tmp_path,
        settings=_settings(),
    )
    assert [p.name for p in paths] == ["train.jsonl", "1-train.jsonl", "_.._escape"]
    assert all(p.parent == tmp_path for p in paths)
    assert paths[1].read_bytes() == b'{"text": "b"}\n'


def test_redact() -> None:
    assert redact("https://user:pw@host.example:8443/p/a.csv?sig=1#x") == (
        "https://host.example:8443/p/a.csv"
    )


def test_cli_fetch(
    http_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http_server.add("/train.jsonl", (200, JSON_TYPE, JSONL))
    dest = tmp_path / "data"
    assert main(["fetch", "--url", http_server.url("/train.jsonl"), "--dest", str(dest)]) == 1
    assert "is not allowed (address)" in caplog.text
    monkeypatch.setenv("KAITO_TUNING_FETCH_ALLOW_LOOPBACK", "true")
    assert main(["fetch", "--url", http_server.url("/train.jsonl"), "--dest", str(dest)]) == 0
    assert (dest / "train.jsonl").read_bytes() == JSONL


def test_https_is_pinned_with_the_original_server_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TLS to the checked address still verifies the certificate for the URL's host name."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=data.test", "-addext", "subjectAltName=DNS:data.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = LoopbackServer()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server.server.socket = server_context.wrap_socket(server.server.socket, server_side=True)
    route = server.add("/train.jsonl", (200, JSON_TYPE, JSONL))
    server.thread.start()
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "data.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    trust = ssl.create_default_context(cafile=str(cert))
    real_client = httpx.Client
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(
        "kaito_tuning.fetch.httpx.Client",
        lambda **kwargs: real_client(**{**kwargs, "verify": trust}),
    )
    try:
        url = f"https://data.test:{server.port}/train.jsonl"
        path = fetch_url(url, tmp_path / "data", settings=_settings())
    finally:
        server.server.shutdown()
        server.server.server_close()
    assert path.read_bytes() == JSONL
    assert route.hosts == [f"data.test:{server.port}"]


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://localhost:8080/a.csv", "localhost"),
        ("http://10.0.0.1/a.csv", "address"),
    ],
)
def test_unsafe_hosts_are_refused_before_any_dns_query(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, rule: str
) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("resolved an unsafe host")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(FetchError, match=rf"is not allowed \({rule}\)"):
        fetch_url(url, tmp_path, settings=TuningSettings())


def test_truncated_body_is_retried_and_never_kept(http_server: Any, tmp_path: Path) -> None:
    route = http_server.add(
        "/cut.jsonl",
        (200, {**JSON_TYPE, "Content-Length": "1000"}, JSONL),
        (200, JSON_TYPE, JSONL),
    )
    path = fetch_url(http_server.url("/cut.jsonl"), tmp_path, settings=_settings())
    assert route.hits == 2
    assert path.read_bytes() == JSONL
    assert [p.name for p in tmp_path.iterdir()] == ["cut.jsonl"]
