"""Stage 1's view of the tenants topic: which downstream names a realm has, from raw records only."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet

from service.pipeline.downstream_names import DownstreamIndex
from service.tenants.models import Tenant, TokenCipher, encode_tenant

KEY = Fernet.generate_key().decode()


def record(realm: str, name: str = "default", realm_id: str | None = None) -> bytes:
    return encode_tenant(Tenant(realm, "https://scim.example/v2", "t", realm_id=realm_id, name=name), TokenCipher(KEY))


def test_a_realm_lists_each_downstream_its_records_name() -> None:
    """By realm name and by the internal id a record declared; another realm's are not mixed in."""
    index = DownstreamIndex()
    index.apply(b"acme", record("acme", realm_id="id-acme"))
    index.apply(b"acme/crm", record("acme", "crm"))
    index.apply(b"other/hr", record("other", "hr"))
    assert index.names("acme") == ("crm", "default")
    assert index.names("id-acme") == ("crm", "default")
    assert index.names("other") == ("hr",)
    assert index.names("nobody") == ()
    assert len(index) == 3


def test_a_tombstone_removes_the_downstream() -> None:
    index = DownstreamIndex()
    index.apply(b"acme", record("acme"))
    index.apply(b"acme/crm", record("acme", "crm"))
    index.apply(b"acme", None)
    assert index.names("acme") == ("crm",)
    index.apply(b"acme/crm", None)
    assert index.names("acme") == ()


def test_a_record_that_cannot_be_read_still_counts() -> None:
    """Stage 1 reads no secret: a record it cannot parse still names a downstream, whose changes stage 2
    holds until the record reads, rather than stage 1 dropping them."""
    index = DownstreamIndex()
    index.apply(b"acme/crm", b"not json")
    index.apply(b"acme", json.dumps({"realm": "acme", "token_encrypted": "x"}).encode())
    assert index.names("acme") == ("crm", "default")
