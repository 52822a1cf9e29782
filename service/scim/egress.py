"""Where the service may send requests: a tenant's base URL must not make it probe internal systems.

`https` only, unless the host is on an explicit allow-list (local development). Link-local and cloud
metadata addresses are always refused; private, loopback and shared ranges unless allowed by a setting.
The check runs on the URL at enable time, on every resolved address at connect time (a resolver
wrapper), so a DNS name that later resolves to an internal address is refused too, and on IP-literal
hosts at request time by the client (aiohttp does not call the resolver for those).

An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) reaches
that IPv4 host through a translator or tunnel, so the IPv4 rules apply to what it carries as well.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from aiohttp.resolver import DefaultResolver

from service.errors import EnableRefused
from service.jsonhttp import ForbiddenAddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_REFUSED = [
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "0.0.0.0/8", "100.100.100.200/32", "::/128")
]
PRIVATE = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "100.64.0.0/10", "::1/128", "fc00::/7")
]
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow_http_hosts: frozenset[str] = frozenset()
    allow_private_networks: bool = False

    def check_url(self, url: str, what: str = "the base URL") -> str:
        """Refuse what no resolution can make acceptable; returns the host. `what` names the URL in refusals."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError as exc:
            raise EnableRefused("invalid_url", f"{what} does not parse") from exc
        if parts.scheme not in ("http", "https") or not host:
            raise EnableRefused("invalid_url", f"{what} must be an absolute http(s) URL")
        if parts.username or parts.password:
            raise EnableRefused("invalid_url", "credentials belong in the token, not in the URL")
        if "?" in url or "#" in url:  # even an empty one: paths are appended to the base URL
            raise EnableRefused("invalid_url", f"{what} must not carry a query or a fragment")
        if host.lower() in METADATA_HOSTS:
            raise EnableRefused("forbidden_address", f"{host} is a cloud metadata endpoint")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None  # a name: checked once resolved
        if literal is not None:
            self.check_address(literal)
        if parts.scheme == "http" and host not in self.allow_http_hosts:
            raise EnableRefused("insecure_url", f"http is only allowed for hosts in ALLOW_HTTP_HOSTS, not {host}")
        return host

    def check_address(self, address: IPAddress) -> None:
        """Refuse the address, or any IPv4 address it carries, when the policy forbids it."""
        for candidate in (address, *embedded_ipv4(address)):
            self._check_one(candidate, address)

    def _check_one(self, address: IPAddress, seen: IPAddress) -> None:
        shown = f"{seen} (carrying {address})" if address != seen else str(address)
        if any(address in net for net in ALWAYS_REFUSED):
            raise EnableRefused("forbidden_address", f"{shown} is link-local or a cloud metadata address")
        if not self.allow_private_networks and any(address in net for net in PRIVATE):
            raise EnableRefused("forbidden_address", f"{shown} is a private address (ALLOW_PRIVATE_NETWORKS is off)")

    def check_host(self, host: str) -> None:
        """The request-time check of an IP-literal host, which never reaches the resolver. Raises
        ForbiddenAddress like the resolver does; names pass here (the resolver checks them)."""
        refusal = _literal_refusal(self, host)
        if refusal is not None:
            raise ForbiddenAddress(refusal)

    async def check_resolved(self, url: str, what: str = "the base URL") -> None:
        """The enable-time check: the URL, then every address its host resolves to."""
        host = self.check_url(url, what)
        port = urlsplit(url).port or 443
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise EnableRefused("unreachable", f"{host} does not resolve") from exc
        for info in infos:
            self.check_address(ipaddress.ip_address(info[4][0]))


@functools.lru_cache(maxsize=4096)
def _literal_refusal(policy: EgressPolicy, host: str) -> str | None:
    """Why `policy` refuses the IP-literal `host` (None: allowed, or a name). Cached: it runs before every
    request, and a tenant's host rarely changes."""
    if not is_ip_address(host):
        return None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:  # 2130706433, 127.1: numeric forms that stand for another address
        return f"{host} is not a canonical IP address"
    try:
        policy.check_address(literal)
    except EnableRefused as exc:
        return exc.detail
    return None


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to through a translator or a tunnel."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    value = int(address)
    if address.ipv4_mapped:
        return [address.ipv4_mapped]
    if address in NAT64_WELL_KNOWN or (address in IPV4_COMPATIBLE and value > 1):  # :: and ::1 have own rules
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in NAT64_LOCAL_USE:
        return _rfc6052_candidates(value)
    if address.sixtofour:
        return [address.sixtofour]
    if address.teredo:
        server, client = address.teredo
        return [server, client]
    return []


def _rfc6052_candidates(value: int) -> list[ipaddress.IPv4Address]:
    """A local-use NAT64 prefix may be /48, /56, /64 or /96 long (RFC 6052 section 2.2) and the address
    does not say which, so every layout is read (bits 64-71 are skipped in the shorter ones) and each
    reading must pass. A reading in 0.0.0.0/8 is a layout not in use: no packet is sent to "this network"."""
    without_u = ((value >> 64) << 56) | (value & ((1 << 56) - 1))  # 120 bits: bits 64-71 removed
    readings = [ipaddress.IPv4Address(value & 0xFFFFFFFF)]  # /96: the last 32 bits
    readings += [ipaddress.IPv4Address((without_u >> (120 - prefix - 32)) & 0xFFFFFFFF) for prefix in (48, 56, 64)]
    return [reading for reading in readings if reading not in THIS_NETWORK]


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses addresses the policy forbids."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                self._policy.check_address(ipaddress.ip_address(result["host"]))
            except EnableRefused as exc:
                raise ForbiddenAddress(exc.detail) from exc
        return results

    async def close(self) -> None:
        await self._inner.close()
