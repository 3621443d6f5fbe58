"""``kaito-tuning fetch``: download the dataset URLs of a tuning Workspace into the input.

Safety and robustness rules:

* every URL (and every redirect target) passes :func:`kaito_sdk.urls.check_public_url`;
  the host is resolved here, every address it resolves to is checked, and the
  connection goes to one of those checked addresses (the request keeps the original
  ``Host`` header and TLS server name), so a DNS answer that changes between the check
  and the connection (DNS rebinding) cannot reach a private address;
* answers must have a dataset content type (csv, json, jsonl, parquet, arrow, or a
  generic binary/text type); HTML error pages and the like are refused;
* files larger than ``fetch_max_bytes`` are refused (from ``Content-Length`` when sent,
  and while streaming otherwise); a partial file never takes the final name;
* connection errors, 429 and 5xx answers are retried with exponential backoff;
* progress is logged with the rate; URLs are logged without query or credentials.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from kaito_sdk.urls import UnsafeURLError, check_public_url
from kaito_tuning.settings import TuningSettings

__all__ = ["CONTENT_TYPES", "FetchError", "fetch_all", "fetch_url", "redact"]

logger = logging.getLogger(__name__)

#: Accepted ``Content-Type`` values and the file extension each implies (None: from URL).
CONTENT_TYPES: Final[dict[str, str | None]] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "text/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/vnd.apache.arrow.file": "arrow",
    "application/vnd.apache.arrow.stream": "arrow",
    "application/octet-stream": None,
    "binary/octet-stream": None,
    "text/plain": None,
}
_RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]")
_MIB: Final = 1024 * 1024


class FetchError(RuntimeError):
    """A dataset URL that could not (or must not) be downloaded."""


class _RetryableError(FetchError):
    """A failure worth another try (connection error, 429, 5xx)."""


@dataclass(frozen=True)
class _Target:
    """Where one request really goes: a checked address, plus the original host."""

    url: str
    host_header: str
    sni_hostname: str


def redact(url: str) -> str:
    """``url`` without credentials, query or fragment: safe for logs and errors."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _pin(url: str, *, allow_loopback: bool) -> _Target:
    """Check ``url``, resolve its host, check every address, and pin the first one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{redact(url)}: only http and https URLs with a host are fetched")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    try:
        if not allow_loopback:
            check_public_url(url)  # host names and literals, before any DNS query
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _RetryableError(f"{redact(url)}: cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not (allow_loopback and all(address.is_loopback for address in addresses)):
            check_public_url(url)
            for address in addresses:
                literal = f"[{address}]" if address.version == 6 else str(address)
                check_public_url(f"{parts.scheme}://{literal}/")
    except UnsafeURLError as exc:
        resolved = f" (resolved {host} to {', '.join(map(str, addresses))})"
        raise FetchError(
            f"{redact(url)} is not allowed ({exc.rule}): {exc.detail}"
            + (resolved if exc.url != url else "")
        ) from None
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{literal}:{port}" if userinfo else f"{literal}:{port}"
    host_header = parts.netloc.rpartition("@")[2]
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return _Target(url=pinned, host_header=host_header, sni_hostname=host)


def _file_name(url: str, index: int, extension: str | None) -> str:
    base = unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2])
    name = _UNSAFE_NAME.sub("_", base).lstrip(".") or f"data-{index}"
    known = {f".{ext}" for ext in CONTENT_TYPES.values() if ext is not None}
    if extension is not None and Path(name).suffix.lower() not in known:
        name = f"{name}.{extension}"
    return name


def _content_type(response: httpx.Response, url: str) -> str | None:
    raw = response.headers.get("content-type")
    if raw is None:
        return None
    media_type = raw.split(";", 1)[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        allowed = ", ".join(CONTENT_TYPES)
        raise FetchError(
            f"{redact(url)}: content type {media_type!r} is not a dataset (allowed: {allowed})"
        )
    return CONTENT_TYPES[media_type]


def _download(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    index: int,
    settings: TuningSettings,
    taken: frozenset[str],
) -> Path:
    current = url
    for _ in range(settings.fetch_max_redirects + 1):
        target = _pin(current, allow_loopback=settings.fetch_allow_loopback)
        extensions = {"sni_hostname": target.sni_hostname} if current.startswith("https") else {}
        request = client.build_request(
            "GET", target.url, headers={"Host": target.host_header}, extensions=extensions
        )
        try:
            response = client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _RetryableError(f"{redact(current)}: {type(exc).__name__}: {exc}") from None
        try:
            if response.is_redirect and "location" in response.headers:
                current = urljoin(current, response.headers["location"])
                logger.info("fetch: redirected to %s", redact(current))
                continue
            if response.status_code in _RETRY_STATUSES:
                raise _RetryableError(f"{redact(current)}: HTTP {response.status_code}")
            if response.status_code != 200:
                raise FetchError(f"{redact(current)}: HTTP {response.status_code}")
            name = _file_name(url, index, _content_type(response, current))
            if name in taken:
                name = f"{index}-{name}"
            return _stream_to_file(response, current, dest / name, settings)
        finally:
            response.close()
    raise FetchError(f"{redact(url)}: more than {settings.fetch_max_redirects} redirects")


def _stream_to_file(
    response: httpx.Response, url: str, path: Path, settings: TuningSettings
) -> Path:
    limit = settings.fetch_max_bytes
    declared = response.headers.get("content-length")
    total = int(declared) if declared and declared.isdigit() else None
    if total is not None and total > limit:
        raise FetchError(f"{redact(url)}: {total} bytes is over the size limit of {limit} bytes")
    partial = path.with_name(f".{path.name}.part")
    started = last_log = time.monotonic()
    received = 0
    try:
        with partial.open("wb") as handle:
            try:
                for chunk in response.iter_bytes(chunk_size=1024 * 1024):
                    received += len(chunk)
                    if received > limit:
                        raise FetchError(
                            f"{redact(url)}: more than the size limit of {limit} bytes"
                        )
                    handle.write(chunk)
                    now = time.monotonic()
                    if now - last_log >= settings.log_interval_s:
                        last_log = now
                        _log_progress(path.name, received, total, now - started)
            except httpx.TransportError as exc:
                raise _RetryableError(f"{redact(url)}: {type(exc).__name__}: {exc}") from None
        if total is not None and received != total:
            raise _RetryableError(f"{redact(url)}: got {received} of {total} bytes")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    _log_progress(path.name, received, total, time.monotonic() - started, done=True)
    return path


def _log_progress(
    name: str, received: int, total: int | None, elapsed: float, *, done: bool = False
) -> None:
    rate = received / _MIB / max(elapsed, 1e-6)
    of_total = f" of {total / _MIB:.1f} MiB" if total is not None else ""
    verb = "fetched" if done else "fetching"
    logger.info(
        "fetch %s: %s %.1f MiB%s in %.1f s (%.2f MiB/s)",
        name,
        verb,
        received / _MIB,
        of_total,
        elapsed,
        rate,
    )


def fetch_url(
    url: str,
    dest: Path,
    *,
    settings: TuningSettings,
    index: int = 0,
    taken: frozenset[str] = frozenset(),
) -> Path:
    """Download one URL into ``dest`` with retries; returns the file written.

    ``taken`` holds file names already used in ``dest`` by earlier URLs of the same run.
    """
    dest.mkdir(parents=True, exist_ok=True)
    timeout = httpx.Timeout(settings.fetch_timeout_s)
    attempts = settings.fetch_retries + 1
    attempt = 1
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        while True:
            try:
                return _download(client, url, dest, index=index, settings=settings, taken=taken)
            except _RetryableError as exc:
                if attempt == attempts:
                    raise FetchError(f"{exc} (gave up after {attempts} attempts)") from None
                wait = settings.fetch_backoff_s * 2 ** (attempt - 1)
                logger.warning(
                    "fetch: attempt %d/%d failed: %s; retrying in %.1f s",
                    attempt,
                    attempts,
                    exc,
                    wait,
                )
                time.sleep(wait)
                attempt += 1


def fetch_all(urls: list[str], dest: Path, *, settings: TuningSettings) -> list[Path]:
    """Download every URL into ``dest`` (distinct file names); stops at the first failure."""
    written: list[Path] = []
    for index, url in enumerate(urls):
        taken = frozenset(path.name for path in written)
        written.append(fetch_url(url, dest, settings=settings, index=index, taken=taken))
    return written
