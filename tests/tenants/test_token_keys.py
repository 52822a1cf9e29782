"""Token keys: the first of OUTBOUND_SCIM_TOKEN_KEY encrypts, all decrypt; records re-encrypted with the first."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from service.errors import ConfigError, TenantUnreadable
from service.tenants.models import Tenant, TokenCipher, decode_tenant, encode_tenant, reencrypted
from service.tenants.reencrypt import plan_reencryption

K1, K2, K3 = (Fernet.generate_key().decode() for _ in range(3))
TOKEN = "downstream-secret-token"
TENANT = Tenant("acme", "https://scim.example.com/v2", TOKEN, generation=4, realm_id="id-acme", max_concurrency=3)


def record(keys: str, tenant: Tenant = TENANT) -> bytes:
    return encode_tenant(tenant, TokenCipher(keys))


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    """A record written under "K2,K1" is under K2: K2 alone reads it, K1 alone does not; "K2,K1" reads K1's."""
    assert decode_tenant(record(f"{K2},{K1}"), TokenCipher(K2), "acme") == TENANT
    with pytest.raises(TenantUnreadable):
        decode_tenant(record(f"{K2},{K1}"), TokenCipher(K1), "acme")
    assert decode_tenant(record(K1), TokenCipher(f"{K2}, {K1}"), "acme") == TENANT


def test_a_record_no_key_decrypts_is_unreadable_and_says_the_fix() -> None:
    """The error names the realm, the setting and what to do, and never the token."""
    with pytest.raises(TenantUnreadable) as caught:
        decode_tenant(record(K1), TokenCipher(f"{K2},{K3}"), "acme")
    error = caught.value
    assert str(error) == "the record of realm acme does not decrypt with any OUTBOUND_SCIM_TOKEN_KEY"
    assert "OUTBOUND_SCIM_TOKEN_KEY" in error.fix
    assert "enable the realm again" in error.fix
    assert error.retriable
    assert TOKEN not in f"{error} {error.fix}"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'{"realm": "acme"}', b'{"token_encrypted": 7}'])
def test_a_malformed_record_is_unreadable_without_quoting_it(raw: bytes) -> None:
    """Malformed records are unreadable too; the message names the exception type, not the record."""
    with pytest.raises(TenantUnreadable, match=r"^the record of realm acme is not a valid tenant record \(\w+\)$"):
        decode_tenant(raw, TokenCipher(K1), "acme")


@pytest.mark.parametrize("keys", ["", " , ", "not-a-key", f"{K1},not-a-key"])
def test_a_bad_key_list_refuses_to_start(keys: str) -> None:
    """Empty or non-Fernet entries are a ConfigError (the service does not start)."""
    with pytest.raises(ConfigError):
        TokenCipher(keys)


def test_reencrypted_moves_a_record_to_the_first_key_and_keeps_every_other_field() -> None:
    """Under K1 with "K2,K1": rewritten under K2, every other field (unknown ones too) byte-for-byte equal."""
    doc = json.loads(record(K1))
    doc["added_by_a_newer_version"] = {"x": 1}
    raw = json.dumps(doc).encode()
    rewritten = reencrypted(raw, TokenCipher(f"{K2},{K1}"), "acme")
    assert rewritten is not None
    new = json.loads(rewritten)
    assert {k: v for k, v in new.items() if k != "token_encrypted"} == {
        k: v for k, v in doc.items() if k != "token_encrypted"
    }
    assert decode_tenant(rewritten, TokenCipher(K2), "acme") == TENANT
    assert TOKEN.encode() not in rewritten


def test_reencrypted_leaves_a_record_already_under_the_first_key() -> None:
    """Nothing to do: None (the command does not write it)."""
    assert reencrypted(record(K2), TokenCipher(f"{K2},{K1}"), "acme") is None


def test_plan_reencryption_reports_rewritten_current_and_unreadable_realms() -> None:
    """Only records under an older key are written; a record no key decrypts is reported and left alone."""
    cipher = TokenCipher(f"{K2},{K1}")
    records = {"old": record(K1), "new": record(K2), "lost": record(K3), "broken": b"{"}
    writes, report = plan_reencryption(records, cipher)
    assert set(writes) == {"old"}
    assert decode_tenant(writes["old"], TokenCipher(K2), "old") == TENANT
    assert (report.rewritten, report.current) == (["old"], ["new"])
    assert [e.realm for e in report.unreadable] == ["broken", "lost"]
