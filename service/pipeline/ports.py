"""What the pipeline's side jobs need from Kafka, Keycloak and a downstream: one Protocol per need.

The real clients (AIOKafkaProducer, KeycloakAdminClient, ScimClient) have these methods; a unit test
hands in a scripted fake with the same ones, and the type checker holds both to the same signatures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from service.keycloak_admin.client import GroupPage, UserPage
from service.retry import RetryPolicy
from service.scim.client import Downstream, UserSnapshot


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


class GroupReader(Protocol):
    """Reads one group, or one user's direct groups, as Keycloak stores them now (service.keycloak_admin.
    mapping.group_fields); get_group is None when Keycloak says the group does not exist."""

    async def get_group(self, realm: str, group_id: str) -> dict[str, Any] | None: ...

    async def user_groups(self, realm: str, user_id: str) -> list[dict[str, Any]]: ...


class GroupListing(Protocol):
    """Lists a realm's groups (the whole tree, parents first) and a group's direct members, page by page,
    each page with the time its request left."""

    def iter_group_pages(self, realm: str, page_size: int) -> AsyncIterator[GroupPage]: ...

    def iter_group_member_pages(self, realm: str, group_id: str, page_size: int) -> AsyncIterator[UserPage]: ...


class RealmListing(UserListing, GroupListing, Protocol):
    """Everything a backfill or a reconciliation reads from Keycloak: users, groups, members."""


class DownstreamUsers(Protocol):
    """Lists every user a downstream holds."""

    def list_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[dict[str, Any]]: ...


class DownstreamSnapshots(Protocol):
    """Lists every account of a downstream once, saying whether the listing is provably complete."""

    async def snapshot_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> UserSnapshot: ...


class DownstreamGroups(Protocol):
    """Lists every group a downstream holds, with its members unless `members` is False."""

    def list_groups(
        self, ds: Downstream, page_size: int = 200, *, retry: RetryPolicy | None = None, members: bool = True
    ) -> AsyncIterator[dict[str, Any]]: ...


class KeycloakReader(UserReader, GroupReader, Protocol):
    """Reads users and groups as Keycloak stores them (the appliers' re-reads)."""
