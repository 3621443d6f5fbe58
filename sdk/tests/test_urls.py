"""The SSRF guard: every rule rejects what it should and public URLs pass."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaito_sdk.urls import UnsafeURLError, check_public_url

REJECTED = [
    ("ftp://example.com/data.json", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("example.com/data.json", "scheme"),
    ("http:///data.json", "host"),
    ("http://exa mple.com/", "characters"),
    ("http://example.com\\@127.0.0.1/", "characters"),
    ("http://example.com\n/", "characters"),
    ("http://example.com:99999/", "port"),
    ("http://example.com:0/", "port"),
    ("http://localhost/x", "localhost"),
    ("http://LOCALHOST./x", "localhost"),
    ("http://api.localhost/x", "localhost"),
    ("http://ip6-localhost/x", "localhost"),
    ("http://127.0.0.1/", "address"),
    ("http://127.9.9.9:8080/", "address"),
    ("http://2130706433/", "address"),
    ("http://0x7f000001/", "address"),
    ("http://017700000001/", "address"),
    ("http://127.1/", "address"),
    ("http://0177.0.0.1/", "address"),
    ("http://0x7f.0.0.1/", "address"),
    ("http://10.0.0.1/", "address"),
    ("http://172.16.0.1/", "address"),
    ("http://192.168.1.1/", "address"),
    ("http://100.64.0.1/", "address"),
    ("http://169.254.1.1/", "address"),
    ("http://224.0.0.1/", "address"),
    ("http://240.0.0.1/", "address"),
    ("http://0.0.0.0/", "address"),
    ("http://[::]/", "address"),
    ("http://[::1]/", "address"),
    ("http://[::ffff:127.0.0.1]/", "address"),
    ("http://[::ffff:7f00:1]/", "address"),
    ("http://[::ffff:10.0.0.1]/", "address"),
    ("http://[64:ff9b::7f00:1]/", "address"),
    ("http://[2002:7f00:1::]/", "address"),
    ("http://[fe80::1%25eth0]/", "address"),
    ("http://[fc00::1]/", "address"),
    ("http://[ff02::1]/", "address"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://100.100.100.200/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://Metadata.Google.Internal./computeMetadata/v1/", "metadata"),
    ("http://999.1.1.1/", "host"),
    ("http://1.2.3.4.5/", "host"),
    ("http://[not:an:ip]/", "host"),
    ("http://-bad-.example.com/", "host"),
]

ACCEPTED = [
    "https://example.com/data.parquet",
    "http://example.com:8080/a/b?c=d#e",
    "https://huggingface.co/datasets/x/resolve/main/train.jsonl",
    "http://8.8.8.8/",
    "https://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",
    "https://bücher.example/",
    "https://user@example.com/",
    "https://1.example.com/",
]


@pytest.mark.parametrize(("url", "rule"), REJECTED)
def test_unsafe_urls_are_rejected_naming_the_rule(url: str, rule: str) -> None:
    with pytest.raises(UnsafeURLError) as caught:
        check_public_url(url)
    assert caught.value.rule == rule
    assert f"({rule})" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_urls_pass(url: str) -> None:
    check_public_url(url)


def test_schemes_can_be_widened_and_narrowed() -> None:
    check_public_url("s3://bucket.example.com/key", schemes=("s3",))
    with pytest.raises(UnsafeURLError, match="scheme"):
        check_public_url("http://example.com/", schemes=("https",))


def _fake_getaddrinfo(addresses: list[str]) -> Any:
    def getaddrinfo(host: str, port: int | None, *args: Any, **kwargs: Any) -> list[Any]:
        result = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            result.append((family, socket.SOCK_STREAM, 6, "", (address, port or 0)))
        return result

    return getaddrinfo


def test_resolve_checks_every_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # DNS is an external boundary: the name below resolves to one public and one private IP.
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(["93.184.215.14", "10.1.2.3"]))
    check_public_url("https://rebind.example.com/data")  # syntactic check only
    with pytest.raises(UnsafeURLError, match=r"private address 10\.1\.2\.3") as caught:
        check_public_url("https://rebind.example.com/data", resolve=True)
    assert caught.value.rule == "address"


def test_resolve_accepts_public_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(["93.184.215.14", "2606::1"]))
    check_public_url("https://public.example.com/data", resolve=True)


def test_resolve_rejects_metadata_behind_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(["169.254.169.254"]))
    with pytest.raises(UnsafeURLError) as caught:
        check_public_url("http://innocent.example.com/", resolve=True)
    assert caught.value.rule == "metadata"


def test_resolve_uses_the_real_resolver_for_literals() -> None:
    # getaddrinfo answers numeric hosts itself (no DNS, no network).
    check_public_url("http://1.1.1.1:8080/", resolve=True)
    check_public_url("http://[2606:4700:4700::1111]/", resolve=True)


def test_resolve_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(UnsafeURLError) as caught:
        check_public_url("https://nowhere.example.com/", resolve=True)
    assert caught.value.rule == "resolve"


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_integer_ipv4_spelling_gets_the_same_verdict(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    a, b, c, d = address.packed
    spellings = [str(address), str(value), hex(value), f"0{value:o}", f"{a}.{b}.{(c << 8) | d}"]
    verdicts = set()
    for host in spellings:
        try:
            check_public_url(f"http://{host}/")
            verdicts.add("public")
        except UnsafeURLError as exc:
            verdicts.add(exc.rule)
    assert len(verdicts) == 1, (spellings, verdicts)
    assert (verdicts == {"public"}) == (address.is_global and not address.is_multicast)


@given(st.ip_addresses(v=6))
def test_ipv6_literals_pass_only_when_global(address: ipaddress.IPv6Address) -> None:
    try:
        check_public_url(f"https://[{address}]:8443/x")
    except UnsafeURLError:
        return
    assert address.is_global
    assert not address.is_multicast
