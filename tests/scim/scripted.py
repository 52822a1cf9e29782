"""A scripted transport for ScimClient unit tests: each (method, path) answers from its own queue."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.scim.client import ScimClient
from service.scim.transport import Request


class Scripted:
    """Answers each (method, path) from a queue (an exception in it is raised; none left: None) and
    records every request."""

    def __init__(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        self.answers = answers
        self.requests: list[Request] = []

    async def send(self, request: Request) -> Any:
        self.requests.append(request)
        queue = self.answers.get((request.method, request.path), [])
        answer = queue.pop(0) if queue else None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def writes(self) -> list[tuple[str, str, str | None]]:
        """(method, path, If-Match) of every request but the ServiceProviderConfig read."""
        return [(r.method, r.path, r.if_match) for r in self.requests if r.path != "ServiceProviderConfig"]


def client(answers: dict[tuple[str, str], list[Any]]) -> tuple[ScimClient, Scripted]:
    transport = Scripted(answers)
    return ScimClient(transport, Metrics(CollectorRegistry())), transport
