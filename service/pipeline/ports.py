"""What the pipeline's side jobs need from Kafka, Keycloak and a downstream: one Protocol per need.

The real clients (AIOKafkaProducer, KeycloakAdminClient, ScimClient) have these methods; a unit test
hands in a scripted fake with the same ones, and the type checker holds both to the same signatures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from service.keycloak_admin.client import UserPage
from service.retry import RetryPolicy
from service.scim.client import Downstream


class Producer(Protocol):
    """Publishes keyed records (changes into the keyed pipeline)."""

    async def send(self, topic: str, *, key: bytes, value: bytes) -> object: ...

    async def flush(self) -> None: ...


class UserReader(Protocol):
    """Reads one user as Keycloak stores it; None when Keycloak says the user does not exist."""

    async def get_user(self, realm: str, user_id: str) -> dict[str, Any] | None: ...


class UserListing(Protocol):
    """Counts a realm's users and lists them page by page, each page with the time its request left."""

    async def count_users(self, realm: str) -> int: ...

    def iter_user_pages(self, realm: str, page_size: int, *, brief: bool = False) -> AsyncIterator[UserPage]: ...


class DownstreamUsers(Protocol):
    """Lists every user a downstream holds."""

    def list_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[dict[str, Any]]: ...
