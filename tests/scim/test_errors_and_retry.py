"""HTTP status -> error mapping, Retry-After parsing and the backoff policy."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.errors import ScimConflict, ScimError, ScimNotFound, ScimRejected, ScimTransient
from service.retry import RetryPolicy, parse_retry_after
from service.scim.transport import error_for_status

NOW = datetime(2025, 12, 2, 12, 0, 0, tzinfo=UTC)


# -- error_for_status -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_statuses_are_no_error(status: int) -> None:
    """2xx is success: no error."""
    assert error_for_status(status, "GET", "Users") is None


@pytest.mark.parametrize(
    ("status", "kind", "retriable"),
    [
        (400, ScimRejected, False),
        (401, ScimRejected, False),
        (403, ScimRejected, False),
        (404, ScimNotFound, False),
        (408, ScimTransient, True),
        (409, ScimConflict, False),
        (422, ScimRejected, False),
        (429, ScimTransient, True),
        (500, ScimTransient, True),
        (502, ScimTransient, True),
        (503, ScimTransient, True),
    ],
)
def test_status_maps_to_the_error_for_the_next_action(status: int, kind: type[ScimError], retriable: bool) -> None:
    """Each failing status maps to exactly one error class, and only transient ones are retriable."""
    error = error_for_status(status, "POST", "Users")
    assert type(error) is kind
    assert error.retriable is retriable
    assert (error.status, error.method, error.path) == (status, "POST", "Users")


@pytest.mark.parametrize(("status", "unauthorized"), [(400, False), (401, True), (403, True), (422, False)])
def test_rejected_401_and_403_are_unauthorized(status: int, unauthorized: bool) -> None:
    """401 and 403 mean the token is refused; other rejections do not."""
    error = error_for_status(status, "PATCH", "Users/1")
    assert isinstance(error, ScimRejected)
    assert error.unauthorized is unauthorized


@pytest.mark.parametrize("status", [301, 302, 303, 304, 307, 308])
def test_3xx_is_a_redirect_refusal_not_retried(status: int) -> None:
    """A 3xx is ScimRejected(reason="redirect"): the detail names the Location's host, nothing else of it."""
    error = error_for_status(status, "POST", "Users", location="https://elsewhere.example/hook?token=s3cret")
    assert isinstance(error, ScimRejected)
    assert (error.reason, error.status, error.retriable) == ("redirect", status, False)
    assert "elsewhere.example" in error.detail
    assert "s3cret" not in str(error)


def test_other_rejections_have_the_default_reason() -> None:
    """A plain 4xx refusal carries reason "rejected"."""
    error = error_for_status(422, "PATCH", "Users/1")
    assert isinstance(error, ScimRejected)
    assert error.reason == "rejected"


def test_error_keeps_scim_type_and_a_short_detail_but_not_the_body() -> None:
    """scimType and a bounded detail are kept; other body fields (personal data) never reach the message."""
    body = {"scimType": "uniqueness", "detail": "x" * 500, "userName": "jane.doe@example.com"}
    error = error_for_status(409, "POST", "Users", body)
    assert isinstance(error, ScimConflict)
    assert error.scim_type == "uniqueness"
    assert len(error.detail) == 200
    assert "jane.doe@example.com" not in str(error)


def test_non_object_body_is_tolerated() -> None:
    """A text or list error body gives an error without scimType or detail."""
    error = error_for_status(400, "POST", "Users", ["oops"])
    assert error is not None
    assert (error.scim_type, error.detail) == (None, "")


def test_429_honours_retry_after_seconds() -> None:
    """429 with Retry-After: 7 is transient with retry_after 7 seconds."""
    error = error_for_status(429, "GET", "Users", retry_after="7")
    assert isinstance(error, ScimTransient)
    assert error.retry_after == 7.0


def test_429_honours_retry_after_http_date() -> None:
    """429 with an HTTP-date Retry-After is transient with the seconds until that date."""
    when = datetime.now(UTC) + timedelta(seconds=120)
    error = error_for_status(429, "GET", "Users", retry_after=format_datetime(when, usegmt=True))
    assert isinstance(error, ScimTransient)
    assert error.retry_after is not None
    assert 110 <= error.retry_after <= 120


def test_503_honours_retry_after_and_500_has_none() -> None:
    """Retry-After is read on any transient status; without it retry_after is None."""
    with_header = error_for_status(503, "GET", "Users", retry_after="3")
    without = error_for_status(500, "GET", "Users")
    assert isinstance(with_header, ScimTransient) and isinstance(without, ScimTransient)
    assert (with_header.retry_after, without.retry_after) == (3.0, None)


# -- parse_retry_after ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("Tue, 02 Dec 2025 12:00:30 GMT", 30.0),
        ("Tue, 02 Dec 2025 12:01:00 +0000", 60.0),
        ("Tue, 02 Dec 2025 12:00:10", 10.0),
        ("Tue, 02 Dec 2025 11:00:00 GMT", 0.0),
    ],
    ids=[
        "none",
        "empty",
        "zero",
        "seconds",
        "padded",
        "garbage",
        "negative",
        "fraction",
        "http-date",
        "numeric-zone",
        "no-zone-is-utc",
        "past-date",
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    """delay-seconds or an HTTP-date (relative to now, never negative); anything else is None."""
    assert parse_retry_after(value, now=NOW) == seconds


# -- RetryPolicy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 12))
def test_delay_stays_within_the_jitter_bounds(attempt: int) -> None:
    """Attempt n waits between half and all of min(max, base * 2**(n-1))."""
    policy = RetryPolicy(attempts=12, base_seconds=0.2, max_seconds=30.0)
    ceiling = min(30.0, 0.2 * 2 ** (attempt - 1))
    rng = random.Random(attempt)
    for _ in range(200):
        assert ceiling / 2 <= policy.delay(attempt, rng=rng) <= ceiling


def test_delay_is_reproducible_with_a_seeded_random() -> None:
    """The same seed gives the same delays."""
    policy = RetryPolicy()
    first = [policy.delay(n, rng=random.Random(42)) for n in range(1, 7)]
    again = [policy.delay(n, rng=random.Random(42)) for n in range(1, 7)]
    assert first == again


def test_delay_grows_until_the_cap() -> None:
    """The ceiling doubles per attempt and stops at max_seconds."""
    policy = RetryPolicy(base_seconds=1.0, max_seconds=8.0)
    rng = random.Random(7)
    assert 0.5 <= policy.delay(1, rng=rng) <= 1.0
    assert 2.0 <= policy.delay(3, rng=rng) <= 4.0
    assert 4.0 <= policy.delay(10, rng=rng) <= 8.0


@pytest.mark.parametrize(("retry_after", "delay"), [(3.0, 3.0), (0.0, 0.0), (-2.0, 0.0), (3600.0, 30.0)])
def test_retry_after_wins_but_is_clamped(retry_after: float, delay: float) -> None:
    """A Retry-After replaces the backoff, clamped to [0, max_seconds]."""
    assert RetryPolicy(max_seconds=30.0).delay(1, retry_after, rng=random.Random(1)) == delay
