"""A tenant's OAuth2 client secret or Basic password is stored like its token: encrypted, re-encrypted
with the first key, never in the record's readable fields."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from service.domain.capabilities import Overrides
from service.scim.credentials import BasicAuth, ClientCredentials
from service.tenants.models import Tenant, TokenCipher, decode_tenant, encode_tenant, record_fields, reencrypted

K1, K2 = (Fernet.generate_key().decode() for _ in range(2))
SECRET = "client-secret-value"
OAUTH2 = Tenant(
    "acme",
    "https://kc.example/realms/apps/scim/v2",
    "",
    generation=2,
    auth=ClientCredentials("https://kc.example/realms/apps/protocol/openid-connect/token", "svc", SECRET, "scim"),
    preset="keycloak",
    user_lookup="userName",
    capabilities=Overrides(patch=False, max_results=100),
)
BASIC = Tenant("acme", "https://scim.example/v2", "", auth=BasicAuth("svc", SECRET))


@pytest.mark.parametrize("tenant", [OAUTH2, BASIC], ids=["oauth2", "basic"])
def test_the_secret_is_encrypted_at_rest_and_reads_back(tenant: Tenant) -> None:
    """The record holds the secret only encrypted, no token field (a replica that knows only tokens finds
    it unreadable rather than sending no credentials), and decodes to the same tenant."""
    raw = encode_tenant(tenant, TokenCipher(K1))
    assert SECRET.encode() not in raw
    assert "token_encrypted" not in json.loads(raw)
    assert decode_tenant(raw, TokenCipher(K1), "acme") == tenant
    assert "auth" not in record_fields(raw)
    assert SECRET not in repr(tenant) and SECRET not in repr(tenant.downstream)


def test_reencryption_moves_the_auth_secret_to_the_first_key() -> None:
    """reencrypt-tenants covers client secrets: the rewritten record reads with the new key alone."""
    raw = encode_tenant(OAUTH2, TokenCipher(K1))
    rewritten = reencrypted(raw, TokenCipher(f"{K2},{K1}"), "acme")
    assert rewritten is not None
    assert decode_tenant(rewritten, TokenCipher(K2), "acme") == OAUTH2
    assert reencrypted(rewritten, TokenCipher(f"{K2},{K1}"), "acme") is None


def test_the_downstream_carries_the_credentials_and_lookup() -> None:
    ds = OAUTH2.downstream
    assert ds.credentials == OAUTH2.auth and ds.user_lookup == "userName"


def test_each_preset_reads_back_and_an_unknown_one_reads_as_none() -> None:
    """A stored preset decodes to itself; one this version does not know (written by a newer one) to none."""
    django = Tenant(
        "acme", "https://app.example/scim/v2", "t", preset="django-scim2", capabilities=Overrides(patch=False)
    )
    assert decode_tenant(encode_tenant(django, TokenCipher(K1)), TokenCipher(K1), "acme") == django
    doc = json.loads(encode_tenant(django, TokenCipher(K1)))
    unknown = json.dumps({**doc, "preset": "entra"}).encode()
    assert decode_tenant(unknown, TokenCipher(K1), "acme").preset is None
