"""Where the service may send requests: a tenant's base URL must not make it probe internal systems.

`https` only, unless the host is on an explicit allow-list (local development). Link-local and cloud
metadata addresses are always refused; private, loopback and shared ranges unless allowed by a setting.
The check runs on the URL at enable time and on every resolved address at connect time (a resolver
wrapper), so a DNS name that later resolves to an internal address is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from service.errors import EnableRefused

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


class ForbiddenAddress(OSError):
    """Raised by the resolver: aiohttp reports it as a connection error; the client maps it to a refusal."""


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow_http_hosts: frozenset[str] = frozenset()
    allow_private_networks: bool = False

    def check_url(self, url: str) -> str:
        """Refuse what no resolution can make acceptable; returns the host."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError as exc:
            raise EnableRefused("invalid_url", "the base URL does not parse") from exc
        if parts.scheme not in ("http", "https") or not host:
            raise EnableRefused("invalid_url", "the base URL must be an absolute http(s) URL")
        if parts.username or parts.password:
            raise EnableRefused("invalid_url", "credentials belong in the token, not in the URL")
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
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if any(address in net for net in ALWAYS_REFUSED):
            raise EnableRefused("forbidden_address", f"{address} is link-local or a cloud metadata address")
        if not self.allow_private_networks and any(address in net for net in PRIVATE):
            raise EnableRefused("forbidden_address", f"{address} is a private address (ALLOW_PRIVATE_NETWORKS is off)")

    async def check_resolved(self, url: str) -> None:
        """The enable-time check: the URL, then every address its host resolves to."""
        host = self.check_url(url)
        port = urlsplit(url).port or 443
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise EnableRefused("unreachable", f"{host} does not resolve") from exc
        for info in infos:
            self.check_address(ipaddress.ip_address(info[4][0]))


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


