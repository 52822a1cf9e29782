"""Wrong admin-token sign-ins are limited per address (service.console.throttle)."""

from __future__ import annotations

from service.console.sessions import SESSION_COOKIE
from service.console.throttle import ADDRESSES, FAILURES, WINDOW_SECONDS, SignInThrottle
from tests.console.conftest import Ui


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_waits_after_too_many_failures_until_the_oldest_leaves_the_window() -> None:
    clock = Clock()
    throttle = SignInThrottle(clock)
    for _ in range(FAILURES):
        assert throttle.wait_seconds("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
        clock.now += 1
    assert throttle.wait_seconds("10.0.0.1") == WINDOW_SECONDS - FAILURES
    assert throttle.wait_seconds("10.0.0.2") == 0  # another address is not slowed
    clock.now += WINDOW_SECONDS - FAILURES
    assert throttle.wait_seconds("10.0.0.1") == 0


def test_memory_stays_bounded_by_the_addresses_kept() -> None:
    throttle = SignInThrottle(Clock())
    for n in range(ADDRESSES + 50):
        throttle.failed(f"a{n}")
    assert len(throttle._failures) == ADDRESSES


async def test_the_console_refuses_token_sign_in_for_a_while_after_too_many_wrong_tokens(ui: Ui) -> None:
    """Every wrong token is a 401; past the limit even the right token is answered 429 with Retry-After,
    and no session cookie."""
    for _ in range(FAILURES):
        status, _, _ = await ui.sign_in("not-the-token")
        assert status == 401
    status, page, answer = await ui.sign_in()
    assert status == 429
    assert "Too many wrong tokens" in page
    assert 0 < int(answer.headers["Retry-After"]) <= WINDOW_SECONDS
    assert SESSION_COOKIE not in answer.cookies
