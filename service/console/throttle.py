"""A limit on wrong admin-token sign-ins per client address.

The admin token is long and random, so guessing it is hopeless anyway; the limit keeps a script from
trying at the console's full speed and makes such a script visible (a log line per refused try). It
counts failures only: an operator who signs in is never slowed. Per replica and in memory: a restart
forgets the counts, which is fine for a limit whose job is to slow, not to lock out for good. Behind a
proxy every client has the proxy's address, so a flood of wrong tokens can keep token sign-in closed
for a minute for everyone; Keycloak sign-in stays open.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

FAILURES = 10  # wrong tokens per address and window, beyond which sign-in with the token waits
WINDOW_SECONDS = 60.0
ADDRESSES = 10_000  # addresses remembered at most (the oldest forgotten first): memory stays bounded


class SignInThrottle:
    """Wrong sign-ins per address over the last WINDOW_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_seconds(self, address: str) -> float:
        """How long `address` must wait before its next try; 0: it may try now."""
        failures = self._recent(address)
        if len(failures) < FAILURES:
            return 0.0
        return max(0.0, failures[0] + WINDOW_SECONDS - self._clock())

    def failed(self, address: str) -> None:
        failures = self._recent(address)
        failures.append(self._clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > ADDRESSES:
            self._failures.popitem(last=False)

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address, deque())
        horizon = self._clock() - WINDOW_SECONDS
        while failures and failures[0] <= horizon:
            failures.popleft()
        while len(failures) > FAILURES:
            failures.popleft()
        return failures
