"""The per-tenant protections, driven with an explicit clock: circuit breaker, token bucket, egress policy."""

from __future__ import annotations

import ipaddress

import pytest

from service.errors import EnableRefused
from service.jsonhttp import ForbiddenAddress
from service.scim.breaker import BreakerState, CircuitBreaker
from service.scim.egress import EgressPolicy
from service.scim.ratelimit import TokenBucket


def test_breaker_opens_after_consecutive_failures_only() -> None:
    """Failures below the threshold, or interrupted by a success, keep it closed."""
    breaker = CircuitBreaker(threshold=3, open_seconds=5)
    breaker.failed(0)
    breaker.failed(1)
    breaker.succeeded()
    breaker.failed(2)
    breaker.failed(3)
    assert breaker.allows(3)
    assert breaker.failed(4) is BreakerState.OPEN
    assert not breaker.allows(4)
    assert breaker.retry_in(6) == 3


def test_breaker_probe_closes_or_doubles_the_open_period() -> None:
    """Due after the period; a failed probe reopens for twice as long (capped); a good one closes."""
    breaker = CircuitBreaker(threshold=1, open_seconds=5, max_open_seconds=8)
    breaker.failed(0)
    assert not breaker.probe_due(4.9)
    assert breaker.probe_due(5)
    breaker.start_probe()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allows(5), "real traffic waits while the monitor probes"
    breaker.failed(5)
    assert (breaker.state, breaker.period) == (BreakerState.OPEN, 8)
    breaker.start_probe()
    assert breaker.succeeded() is BreakerState.CLOSED
    assert breaker.allows(20)


def test_token_bucket_bursts_then_paces() -> None:
    """A full bucket lets `burst` requests through at once, then one every 60/rate seconds."""
    bucket = TokenBucket(rate_per_minute=60, burst=2)
    assert [bucket.reserve(0), bucket.reserve(0)] == [0, 0]
    assert bucket.reserve(0) == pytest.approx(1.0)
    assert bucket.reserve(0) == pytest.approx(2.0)
    assert bucket.reserve(10) == 0


@pytest.mark.parametrize(
    ("address", "private_allowed", "refused"),
    [
        ("169.254.169.254", True, True),
        ("fd00:ec2::254", True, True),
        ("::ffff:169.254.169.254", True, True),
        ("10.0.0.1", False, True),
        ("10.0.0.1", True, False),
        ("127.0.0.1", False, True),
        ("203.0.113.10", False, False),
        ("2001:db8::1", False, False),
    ],
)
def test_egress_addresses(address: str, private_allowed: bool, refused: bool) -> None:
    """Link-local and metadata always refused; private ranges only when allowed; public ones pass."""
    policy = EgressPolicy(allow_private_networks=private_allowed)
    if refused:
        with pytest.raises(EnableRefused):
            policy.check_address(ipaddress.ip_address(address))
    else:
        policy.check_address(ipaddress.ip_address(address))


def test_egress_http_only_for_allowed_hosts() -> None:
    """Plain http is refused unless the host is allow-listed; https to a public name passes the URL check."""
    with pytest.raises(EnableRefused, match="insecure_url"):
        EgressPolicy().check_url("http://scim.example.com/v2")
    assert EgressPolicy(frozenset({"scim.local"})).check_url("http://scim.local/v2") == "scim.local"
    assert EgressPolicy().check_url("https://scim.example.com/v2") == "scim.example.com"


@pytest.mark.parametrize(
    ("address", "private_allowed", "refused"),
    [
        pytest.param("64:ff9b::a9fe:a9fe", True, True, id="nat64-metadata"),
        pytest.param("64:ff9b::a00:1", False, True, id="nat64-private"),
        pytest.param("64:ff9b::a00:1", True, False, id="nat64-private-allowed"),
        pytest.param("64:ff9b::808:808", False, False, id="nat64-public"),
        pytest.param("64:ff9b:1::a9fe:a9fe", True, True, id="nat64-local-96-metadata"),
        pytest.param("64:ff9b:1:a9fe:a9:fe00::", True, True, id="nat64-local-48-metadata"),
        pytest.param("64:ff9b:1:a:0:1::", False, True, id="nat64-local-56-private"),
        pytest.param("64:ff9b:1:0:a9:fea9:fe00:0", True, True, id="nat64-local-64-metadata"),
        pytest.param("64:ff9b:1::808:808", False, False, id="nat64-local-96-public"),
        pytest.param("64:ff9b:1:808:8:800::", False, False, id="nat64-local-48-public"),
        pytest.param("2002:a9fe:a9fe::1", True, True, id="6to4-metadata"),
        pytest.param("2002:a00:1::1", False, True, id="6to4-private"),
        pytest.param("2002:808:808::1", False, False, id="6to4-public"),
        pytest.param("::a9fe:a9fe", True, True, id="compatible-metadata"),
        pytest.param("::a00:1", False, True, id="compatible-private"),
        pytest.param("::808:808", False, False, id="compatible-public"),
        pytest.param("::1", True, False, id="loopback-stays-private-only"),
        pytest.param("2001:0:4136:e378:8000:63bf:5601:5601", True, True, id="teredo-client-metadata"),
        pytest.param("2001:0:4136:e378:8000:63bf:f5ff:fffe", False, True, id="teredo-client-private"),
        pytest.param("2001:0:a9fe:a9fe:8000:63bf:f7f7:f7f7", True, True, id="teredo-server-metadata"),
        pytest.param("2001:0:4136:e378:8000:63bf:f7f7:f7f7", False, False, id="teredo-public"),
    ],
)
def test_egress_ipv4_carried_in_ipv6(address: str, private_allowed: bool, refused: bool) -> None:
    """NAT64 (both prefixes, every RFC 6052 layout of the local-use one), 6to4, IPv4-compatible and
    Teredo addresses are judged by the IPv4 address they carry; a public one (8.8.8.8) passes."""
    policy = EgressPolicy(allow_private_networks=private_allowed)
    if refused:
        with pytest.raises(EnableRefused, match="forbidden_address"):
            policy.check_address(ipaddress.ip_address(address))
    else:
        policy.check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "https://scim.example.com/v2?",
        "https://scim.example.com/v2?tenant=a",
        "https://scim.example.com/v2#",
        "https://scim.example.com/v2#frag",
        "https://scim.example.com?x",
    ],
)
def test_egress_refuses_a_base_url_with_query_or_fragment(url: str) -> None:
    """Paths are appended to the base URL: a query or fragment, even an empty one, is invalid_url."""
    with pytest.raises(EnableRefused, match="invalid_url"):
        EgressPolicy().check_url(url)


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("169.254.169.254", True),
        ("::ffff:a9fe:a9fe", True),
        ("64:ff9b::a00:1", True),
        ("127.0.0.1", True),
        ("2130706433", True),  # a numeric form aiohttp would not resolve, standing for 127.0.0.1
        ("8.8.8.8", False),
        ("scim.example.com", False),  # a name: the resolver checks what it resolves to
    ],
)
def test_egress_check_host_judges_ip_literals(host: str, refused: bool) -> None:
    """The request-time check refuses forbidden IP literals (ForbiddenAddress) and leaves names to the resolver."""
    if refused:
        with pytest.raises(ForbiddenAddress):
            EgressPolicy().check_host(host)
    else:
        EgressPolicy().check_host(host)
