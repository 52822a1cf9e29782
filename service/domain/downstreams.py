"""A downstream: one SCIM application a realm's users are provisioned to, named within its realm.

Its identity (realm, name) is written as one string, the tenant key, the only one every part keys by
(tenants topic, breakers, gates, parked records, set-aside headers, backfills):

    default downstream   `<realm>`           what a realm's single downstream always was
    any other            `<realm>/<name>`

and a record of the keyed changes topic is keyed `<tenant key>/<user id>` or `<tenant key>/group:<id>`.
So the default downstream's keys are exactly those of a realm with one downstream (no migration), and
no key is ambiguous: realm names, user ids and group ids never hold a `/` (Keycloak puts each in URL
paths), and a name never holds `:` (so `group:<id>` is never a name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, TypeVar

DEFAULT = "default"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
_NAME = re.compile(NAME_PATTERN)

C = TypeVar("C")


def is_name(name: str) -> bool:
    """Whether `name` may name a downstream."""
    return bool(_NAME.fullmatch(name))


def tenant_key(realm: str, name: str = DEFAULT) -> str:
    """The identity of the downstream `name` of `realm` as one string (the tenants topic's record key)."""
    return realm if name == DEFAULT else f"{realm}/{name}"


def split_tenant_key(key: str) -> tuple[str, str]:
    """(realm, downstream name) of a tenant key; the inverse of tenant_key."""
    realm, _, name = key.partition("/")
    return realm, name or DEFAULT


def change_key(realm: str, name: str, local: str) -> str:
    """The keyed topic's key of `local` (a user id, or `group:<id>`) for the downstream `name` of `realm`:
    one user's changes for one downstream land on one partition, in order."""
    return f"{tenant_key(realm, name)}/{local}"


def labels(key: str) -> tuple[str, str]:
    """The (tenant, downstream) metric labels of a tenant key: the realm stays the `tenant` label."""
    return split_tenant_key(key)


def fan_out(change: C, names: Iterable[str]) -> list[C]:
    """One copy of `change` per downstream of its realm, each naming its downstream (and so keyed for it).

    No downstream known: the change as it is (the default downstream's), which stage 2 skips as an
    unknown tenant like any change of a realm without one."""
    wanted = sorted(set(names))
    if not wanted:
        return [change]
    copies: list[Any] = [replace(change, downstream=name) for name in wanted]  # type: ignore[type-var]
    return copies
