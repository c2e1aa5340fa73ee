"""SSRF guard for outbound HTTP: only http(s), and only to public addresses unless an operator
allowed a range with REKOR_EGRESS_ALLOW (comma-separated CIDRs, e.g. `127.0.0.0/8`).

The check runs when a trigger is created (a clear VALIDATION_ERROR) and again before every
delivery on freshly resolved addresses; the request then goes to the checked address itself
(Host header and TLS SNI keep the name), so a DNS answer that changes in between (rebinding)
cannot redirect a delivery to an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata endpoints, refused even if a broader allow-list would not mention them.
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class EgressRefused(Exception):
    """The URL may not be called; the message says why and how to allow it."""


def parse_allow(spec: str) -> list[IPNetwork]:
    """Parse a comma-separated CIDR list (bad entries raise ValueError naming them)."""
    nets: list[IPNetwork] = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    return nets


def address_allowed(addr: IPAddress, allow: list[IPNetwork]) -> bool:
    """True if `addr` is public, or inside an explicitly allowed network."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in net for net in allow):
        return True
    if addr in METADATA:
        return False
    return addr.is_global and not addr.is_multicast


class Target:
    """A checked destination: the URL to request (host replaced by the vetted address) and the
    original host name for the Host header / TLS SNI."""

    def __init__(self, url: str, connect_url: str, host: str, address: str) -> None:
        self.url = url
        self.connect_url = connect_url
        self.host = host
        self.address = address


def check_url_shape(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL, or EgressRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise EgressRefused("only http and https URLs can be called")
    if not parts.hostname:
        raise EgressRefused("the URL has no host")
    if parts.username or parts.password:
        raise EgressRefused("credentials in the URL are not allowed; use the signing secret")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise EgressRefused(f"invalid port: {exc}") from exc
    return parts.scheme, parts.hostname, port


async def resolve_checked(url: str, allow: list[IPNetwork]) -> Target:
    """Resolve the URL's host and refuse it unless every address is allowed."""
    _, host, port = check_url_shape(url)
    addrs: list[IPAddress] = []
    try:
        # An address literal needs no lookup (asyncio would still hop to a thread for it).
        addrs.append(ipaddress.ip_address(host))
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise EgressRefused(f"cannot resolve host '{host}': {exc.strerror}") from exc
        for info in infos:
            addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            if addr not in addrs:
                addrs.append(addr)
    refused = [a for a in addrs if not address_allowed(a, allow)]
    if refused or not addrs:
        raise EgressRefused(
            f"host '{host}' resolves to {', '.join(map(str, refused or addrs))}, a private,"
            " loopback, link-local or metadata address; use a public URL, or have the operator"
            " allow the range in REKOR_EGRESS_ALLOW (comma-separated CIDRs)"
        )
    chosen = addrs[0]
    netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    parts = urlsplit(url)
    connect = parts._replace(netloc=f"{netloc}:{port}").geturl()
    return Target(url, connect, host, str(chosen))
