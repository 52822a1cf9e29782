"""ETags: a downstream announcing `etag.supported` gets user writes sent `If-Match` the version it gave
(kept from its last answer, else read first); a 412 reads the version again and sends once more."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain import scim
from service.domain.capabilities import Overrides
from service.errors import ScimRejected, ScimTransient
from service.scim.client import Downstream
from tests.scim.scripted import client

DS = Downstream("acme", "http://scim.invalid/v2", "token-1")
ETAGS = {"schemas": [scim.SPC_SCHEMA], "etag": {"supported": True}}
NO_ETAGS = {"schemas": [scim.SPC_SCHEMA], "etag": {"supported": False}}
OPS = [{"op": "replace", "path": "active", "value": False}]


def user(version: str) -> dict[str, Any]:
    return {"id": "d-1", "userName": "jdoe", "meta": {"version": version}}


def precondition_failed() -> ScimRejected:
    return ScimRejected(412, "PATCH", "Users/d-1")


async def test_the_version_of_the_last_answer_is_sent_without_a_read() -> None:
    """POST answers version v1: the PATCH after it goes If-Match v1, the next one If-Match what it answered."""
    c, sent = client(
        {
            ("GET", "ServiceProviderConfig"): [ETAGS],
            ("POST", "Users"): [user('W/"1"')],
            ("PATCH", "Users/d-1"): [user('W/"2"'), None],
        }
    )
    await c.create_user(DS, {"userName": "jdoe"})
    await c.patch_user(DS, "d-1", OPS)
    await c.patch_user(DS, "d-1", OPS)
    assert sent.writes() == [
        ("POST", "Users", None),
        ("PATCH", "Users/d-1", 'W/"1"'),
        ("PATCH", "Users/d-1", 'W/"2"'),
    ]


async def test_the_version_of_a_lookup_answer_is_sent_without_a_read() -> None:
    """An account found by its externalId carries its version: the PATCH after the lookup goes If-Match
    that version, with no GET of the account between them."""
    found = {**user('W/"4"'), "externalId": "kc-1"}
    c, sent = client(
        {
            ("GET", "ServiceProviderConfig"): [ETAGS, ETAGS],
            ("GET", "Users"): [{"schemas": [scim.LIST_SCHEMA], "totalResults": 1, "Resources": [found]}],
        }
    )
    assert await c.find_user(DS, "externalId", "kc-1") == found
    await c.patch_user(DS, "d-1", OPS)
    assert sent.writes() == [("GET", "Users", None), ("PATCH", "Users/d-1", 'W/"4"')]


async def test_an_unknown_version_is_read_first() -> None:
    """No version kept (another replica created the user, or an answer without meta): GET, then If-Match."""
    c, sent = client({("GET", "ServiceProviderConfig"): [ETAGS], ("GET", "Users/d-1"): [user('W/"7"')]})
    await c.replace_user(DS, "d-1", {"userName": "jdoe"})
    assert sent.writes() == [("GET", "Users/d-1", None), ("PUT", "Users/d-1", 'W/"7"')]


async def test_a_412_reads_the_resource_again_and_retries_once() -> None:
    """A stale version (412): the resource is read again and the write sent once more with its version."""
    c, sent = client(
        {
            ("GET", "ServiceProviderConfig"): [ETAGS],
            ("GET", "Users/d-1"): [user('W/"1"'), user('W/"3"')],
            ("PATCH", "Users/d-1"): [precondition_failed(), user('W/"4"')],
        }
    )
    await c.patch_user(DS, "d-1", OPS)
    assert sent.writes() == [
        ("GET", "Users/d-1", None),
        ("PATCH", "Users/d-1", 'W/"1"'),
        ("GET", "Users/d-1", None),
        ("PATCH", "Users/d-1", 'W/"3"'),
    ]


async def test_a_second_412_is_transient() -> None:
    """Changed again between the re-read and the retry: a transient error (the applier retries later)."""
    c, _ = client(
        {
            ("GET", "ServiceProviderConfig"): [ETAGS],
            ("GET", "Users/d-1"): [user('W/"1"'), user('W/"2"')],
            ("PATCH", "Users/d-1"): [precondition_failed(), precondition_failed()],
        }
    )
    with pytest.raises(ScimTransient) as caught:
        await c.patch_user(DS, "d-1", OPS)
    assert caught.value.status == 412


async def test_without_etag_support_writes_are_unconditional() -> None:
    """etag.supported false, or the override etag false over a true: no read, no If-Match."""
    c, sent = client({("GET", "ServiceProviderConfig"): [NO_ETAGS]})
    await c.patch_user(DS, "d-1", OPS)
    assert sent.writes() == [("PATCH", "Users/d-1", None)]
    off = Downstream("acme", "http://scim.invalid/v2", "token-1", capabilities=Overrides(etag=False))
    c, sent = client({("GET", "ServiceProviderConfig"): [ETAGS]})
    await c.replace_user(off, "d-1", {"userName": "jdoe"})
    assert sent.writes() == [("PUT", "Users/d-1", None)]
