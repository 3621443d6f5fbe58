"""The SSRF guard for URLs that come from users.

Every outbound URL taken from a manifest or a request (tuning dataset URLs, RAG engine
endpoints, ...) goes through :func:`check_public_url` before anything connects to it.
The check is purely syntactic unless ``resolve=True``: then the host is also resolved
and every address it resolves to must pass the same address rules.

Rules, each named in the :class:`UnsafeURLError` it raises:

* ``scheme``: only the allowed schemes (http and https by default);
* ``characters``: no whitespace, control characters or backslashes anywhere in the URL
  (parsers disagree about them, which is how guards get bypassed);
* ``host``: a host must be present and be a valid host name or IP literal;
* ``port``: the port, if given, must be a number in 1..65535;
* ``localhost``: ``localhost``, ``*.localhost`` and the other loopback host names;
* ``metadata``: cloud instance-metadata endpoints (names and addresses);
* ``address``: IP literals (also decimal, octal, hexadecimal and shortened IPv4 forms,
  and IPv4 embedded in IPv6) that are loopback, private, link-local, multicast,
  reserved, unspecified or otherwise not globally routable;
* ``resolve``: with ``resolve=True``, a host that does not resolve.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

__all__ = ["METADATA_ADDRESSES", "METADATA_HOSTS", "UnsafeURLError", "check_public_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Host names of cloud instance-metadata services (lowercase, no trailing dot).
METADATA_HOSTS: Final[frozenset[str]] = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)

#: Addresses of cloud instance-metadata services (AWS, GCP, Azure, Alibaba, Oracle, ECS).
METADATA_ADDRESSES: Final[frozenset[IPAddress]] = frozenset(
    {
        ipaddress.IPv4Address("169.254.169.254"),
        ipaddress.IPv4Address("169.254.170.2"),
        ipaddress.IPv4Address("169.254.169.253"),
        ipaddress.IPv4Address("100.100.100.200"),
        ipaddress.IPv4Address("192.0.0.192"),
        ipaddress.IPv6Address("fd00:ec2::254"),
        ipaddress.IPv6Address("fd00:ec2::23"),
    }
)

_LOCALHOST_NAMES: Final = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "loopback"}
)
_HOST_LABEL: Final = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL: Final = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_FORBIDDEN_CHARS: Final = re.compile(r"[\x00-\x20\x7f\\]")
_NAT64_PREFIX: Final = bytes.fromhex("0064ff9b0000000000000000")
_FORBIDDEN_KINDS: Final = (
    "unspecified",
    "loopback",
    "link_local",
    "multicast",
    "private",
    "reserved",
)


class UnsafeURLError(ValueError):
    """A URL that must not be fetched; ``rule`` names the rule it broke."""

    def __init__(self, url: str, rule: str, detail: str) -> None:
        self.url = url
        self.rule = rule
        self.detail = detail
        super().__init__(f"URL {url!r} is not allowed ({rule}): {detail}")


def check_public_url(
    url: str, *, resolve: bool = False, schemes: Iterable[str] = ("http", "https")
) -> None:
    """Raise :class:`UnsafeURLError` unless ``url`` points at a public host.

    ``resolve=True`` also resolves the host name with :func:`socket.getaddrinfo` and
    checks every address it returns (use it right before connecting; the syntactic
    check alone cannot see what a name resolves to). A name can resolve differently a
    moment later (DNS rebinding), so a fetcher should also check each redirect target
    and, where it can, connect to an address it checked.
    """
    allowed = tuple(s.lower() for s in schemes)
    if _FORBIDDEN_CHARS.search(url):
        raise UnsafeURLError(url, "characters", "whitespace, control or backslash characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. a bracketed host that is not IPv6
        raise UnsafeURLError(url, "host", str(exc)) from None
    if parts.scheme.lower() not in allowed:
        shown = parts.scheme or "(none)"
        raise UnsafeURLError(url, "scheme", f"scheme {shown} is not one of {', '.join(allowed)}")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeURLError(url, "port", "the port is not a number in 1..65535") from None
    if port == 0:
        raise UnsafeURLError(url, "port", "port 0 is not a valid destination")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURLError(url, "host", "the URL has no host")
    address = _parse_ip(url, host)
    if address is None:
        _check_host_name(url, host)
    else:
        _check_address(url, address)
    if resolve:
        for resolved in _resolve(url, host, port):
            _check_address(url, resolved)


def _parse_ip(url: str, host: str) -> IPAddress | None:
    """The IP address ``host`` spells (any form a C resolver accepts), or None for a name."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise UnsafeURLError(url, "host", f"{host!r} is not a valid IPv6 address") from None
    labels = host.split(".")
    if not _NUMERIC_LABEL.match(labels[-1]):
        return None
    # Like inet_aton (and the WHATWG URL parser): a numeric last label makes it an IPv4.
    if len(labels) > 4 or not all(_NUMERIC_LABEL.match(label) for label in labels):
        raise UnsafeURLError(url, "host", f"{host!r} is neither a host name nor an IPv4 address")
    try:
        numbers = [_parse_ipv4_part(label) for label in labels]
    except ValueError:
        raise UnsafeURLError(url, "host", f"{host!r} is not a valid IPv4 address") from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise UnsafeURLError(url, "host", f"{host!r} is not a valid IPv4 address")
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _parse_ipv4_part(label: str) -> int:
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)
    return int(label)


def _check_host_name(url: str, host: str) -> None:
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise UnsafeURLError(url, "host", f"{host!r} is not a valid host name") from None
    if len(ascii_host) > 253 or not all(_HOST_LABEL.match(lbl) for lbl in ascii_host.split(".")):
        raise UnsafeURLError(url, "host", f"{host!r} is not a valid host name")
    if ascii_host in _LOCALHOST_NAMES or ascii_host.endswith(".localhost"):
        raise UnsafeURLError(url, "localhost", f"{host!r} names the local machine")
    if ascii_host in METADATA_HOSTS:
        raise UnsafeURLError(url, "metadata", f"{host!r} is a cloud metadata endpoint")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, bool]:
    """The IPv4 address carried inside an IPv6 one, and whether the IPv6 form is only a
    spelling of it (IPv4-mapped, IPv4-compatible, NAT64) rather than a tunnel (6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, True
    packed = address.packed
    if packed[:12] in (bytes(12), _NAT64_PREFIX):
        return ipaddress.IPv4Address(packed[12:]), True
    if address.sixtofour is not None:
        return address.sixtofour, False
    if address.teredo is not None:
        return address.teredo[1], False
    return None, False


def _check_address(url: str, address: IPAddress) -> None:
    if address in METADATA_ADDRESSES:
        raise UnsafeURLError(url, "metadata", f"{address} is a cloud metadata endpoint")
    if isinstance(address, ipaddress.IPv6Address):
        _check_kinds(url, address, ("unspecified", "loopback"))
        embedded, same_host = _embedded_ipv4(address)
        if embedded is not None:
            _check_address(url, embedded)
            if same_host:
                return
    _check_kinds(url, address, _FORBIDDEN_KINDS)
    if not address.is_global:
        raise UnsafeURLError(url, "address", f"{address} is not a globally routable address")


def _check_kinds(url: str, address: IPAddress, kinds: Iterable[str]) -> None:
    for kind in kinds:
        if getattr(address, f"is_{kind}"):
            label = kind.replace("_", "-")
            raise UnsafeURLError(url, "address", f"{label} address {address} is not public")


def _resolve(url: str, host: str, port: int | None) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURLError(url, "resolve", f"{host!r} does not resolve: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    if not addresses:
        raise UnsafeURLError(url, "resolve", f"{host!r} resolves to no address")
    return addresses
