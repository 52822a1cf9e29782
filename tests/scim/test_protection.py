"""The per-tenant protections, driven with an explicit clock: circuit breaker, token bucket, egress policy."""

from __future__ import annotations

import ipaddress

import pytest

from service.errors import EnableRefused
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
