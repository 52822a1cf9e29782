"""The tenant store's view of the topic, record by record: unreadable records are remembered, not skipped."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from structlog.testing import capture_logs

from service.errors import TenantUnreadable
from service.metrics import Metrics
from service.settings import Settings
from service.tenants.models import Tenant, TokenCipher, encode_tenant
from service.tenants.store import TenantStore, TenantUpdate

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
ACME = Tenant("acme", "https://scim.example.com/v2", "token-1", generation=3, realm_id="id-acme")


def store_with(keys: str, *first: Callable[[TenantUpdate], None]) -> tuple[TenantStore, list[TenantUpdate]]:
    """A store whose observers are `first`, then one that records every update."""
    settings = Settings(token_key=SecretStr(keys), admin_token=SecretStr("a"))
    store = TenantStore(settings, TokenCipher(keys), Metrics(CollectorRegistry()))
    updates: list[TenantUpdate] = []
    for observer in (*first, updates.append):
        store.observe(observer)
    return store, updates


def test_an_unreadable_record_raises_on_lookup_instead_of_looking_disabled() -> None:
    """By name and by realm id: TenantUnreadable, not None; listed with its reason, generation kept; an
    error log line says what to do."""
    store, updates = store_with(NEW)
    with capture_logs() as logs:
        store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(OLD)))
    [line] = [e for e in logs if e["event"] == "tenants.record.unreadable"]
    assert (line["log_level"], line["tenant"]) == ("error", "acme")
    assert "add the key it was written with to OUTBOUND_SCIM_TOKEN_KEY" in line["fix"]
    assert "token-1" not in str(line)
    for lookup in ("acme", "id-acme"):
        with pytest.raises(TenantUnreadable, match="the record of realm acme does not decrypt"):
            store.get(lookup)
    assert store.get("other") is None
    assert store.all() == []
    assert [e.realm for e in store.unreadable()] == ["acme"]
    assert store.last_generation("acme") == 3
    assert (updates[-1].unreadable, updates[-1].tenant) == (True, None)


def test_a_readable_record_after_an_unreadable_one_is_reported_readable_again() -> None:
    """Re-enabled (a record under a configured key): get answers it, observers see readable_again."""
    store, updates = store_with(NEW)
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(OLD)))
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(NEW)))
    assert store.get("acme") == ACME
    assert store.unreadable() == []
    assert updates[-1].readable_again
    assert updates[-1].tenant == ACME


def test_a_tombstone_for_an_unreadable_record_disables_the_realm() -> None:
    """Disabled: get answers None again, the realm id is forgotten, observers see readable_again + disabled."""
    store, updates = store_with(NEW)
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(OLD)))
    store.apply_record(b"acme", None)
    assert store.get("acme") is None
    assert store.get("id-acme") is None
    assert store.last_generation("acme") is None
    assert updates[-1].readable_again
    assert updates[-1].disabled


def test_a_newer_unreadable_record_replaces_the_readable_one() -> None:
    """The newest record is the truth: an older readable token is not used once a newer record arrives."""
    store, updates = store_with(OLD)
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(OLD)))
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(NEW)))
    with pytest.raises(TenantUnreadable):
        store.get("acme")
    assert updates[-1].previous == ACME
    assert not updates[-1].readable_again


def test_an_observer_failure_does_not_stop_the_store() -> None:
    """A failing observer is logged; the record is in effect and later observers still hear of it."""

    def failing(_: TenantUpdate) -> None:
        raise RuntimeError("observer bug")

    store, updates = store_with(OLD, failing)
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(OLD)))
    assert store.get("acme") == ACME
    assert len(updates) == 1


def test_generations_keep_growing_across_a_disable() -> None:
    """Enabled again after a disable: the next generation is above the old one (a stale gate stays stale)."""
    store, _ = store_with(OLD)
    assert store.next_generation("acme") == 1
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(OLD)))
    assert (store.last_generation("acme"), store.next_generation("acme")) == (3, 4)
    store.apply_record(b"acme", None)
    assert (store.last_generation("acme"), store.next_generation("acme")) == (None, 4)


def test_a_realm_holds_several_downstreams_each_under_its_own_key() -> None:
    """The store indexes by (realm, name): `get` by tenant key (the realm, or `<realm>/<name>`, the realm
    also by the internal id any of its records declared), `downstreams` lists one realm's, and disabling
    one leaves the other."""
    crm = Tenant("acme", "https://crm.example/v2", "token-2", name="crm")
    store, updates = store_with(NEW)
    store.apply_record(b"acme", encode_tenant(ACME, TokenCipher(NEW)))
    store.apply_record(b"acme/crm", encode_tenant(crm, TokenCipher(NEW)))
    assert store.get("acme") == ACME
    assert store.get("acme/crm") == crm
    assert store.get("id-acme/crm") == crm
    assert store.get("acme/hr") is None
    assert [t.name for t in store.downstreams("acme")] == ["crm", "default"]
    assert [t.key for t in store.all()] == ["acme/crm", "acme"]
    assert updates[-1].key == "acme/crm"
    store.apply_record(b"acme", None)
    assert store.get("acme") is None
    assert store.get("acme/crm") == crm
    assert store.last_generation("acme") is None
    assert store.next_generation("acme") == 4
