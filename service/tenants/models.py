"""A tenant = a Keycloak realm whose users are provisioned to one SCIM downstream."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.fernet import Fernet, InvalidToken

from service.domain.plan import DeletePolicy
from service.errors import ConfigError
from service.scim.client import Downstream

TenantStatus = Literal["enabled", "unauthorized"]

NOTICES = {
    "no_representation": (
        "admin events arrive without the user's representation, and no Keycloak access is configured to "
        "re-read those users: their changes are not applied. Turn on the realm's Admin events > Include "
        "representation, or configure OUTBOUND_SCIM_KEYCLOAK_* (then run a backfill or reconciliation)."
    ),
}


@dataclass(frozen=True, slots=True)
class Tenant:
    realm: str
    base_url: str
    token: str = field(repr=False)
    delete_policy: DeletePolicy = DeletePolicy.IGNORE
    updated_at: str = ""
    max_concurrency: int | None = None
    rate_limit_per_minute: int | None = None
    status: TenantStatus = "enabled"
    generation: int = 1  # bumped by every enable / rotate: tells a stale "unauthorized" mark apart
    realm_id: str | None = None  # the realm's internal id: plugins that send no realmName (playa) use it
    reconcile_interval_minutes: float | None = None  # periodic reconciliation; None: off
    notices: dict[str, str] = field(default_factory=dict)  # code -> when first seen: things an operator should fix

    @property
    def downstream(self) -> Downstream:
        return Downstream(self.realm, self.base_url, self.token, self.max_concurrency, self.rate_limit_per_minute)

    def public(self) -> dict[str, Any]:
        """What the API and CLI may show: never the token."""
        return {
            "realm": self.realm,
            "status": self.status,
            "base_url": self.base_url,
            "delete_policy": str(self.delete_policy),
            "max_concurrency": self.max_concurrency,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "realm_id": self.realm_id,
            "reconcile_interval_minutes": self.reconcile_interval_minutes,
            "updated_at": self.updated_at,
            "notices": [{"code": code, "since": since, "detail": NOTICES.get(code, "")}
                        for code, since in sorted(self.notices.items())],
        }


class TokenCipher:
    """Encrypts downstream tokens at rest (Fernet: AES-128-CBC + HMAC-SHA256)."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError) as exc:
            raise ConfigError("token_key must be a Fernet key (32 url-safe base64 bytes)") from exc

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, blob: str) -> str:
        try:
            return self._fernet.decrypt(blob.encode()).decode()
        except InvalidToken as exc:
            raise ConfigError("a stored tenant token does not decrypt with token_key") from exc


def encode_tenant(tenant: Tenant, cipher: TokenCipher) -> bytes:
    return json.dumps(
        {
            "realm": tenant.realm,
            "base_url": tenant.base_url,
            "token_encrypted": cipher.encrypt(tenant.token),
            "delete_policy": str(tenant.delete_policy),
            "updated_at": tenant.updated_at,
            "max_concurrency": tenant.max_concurrency,
            "rate_limit_per_minute": tenant.rate_limit_per_minute,
            "status": tenant.status,
            "generation": tenant.generation,
            "realm_id": tenant.realm_id,
            "reconcile_interval_minutes": tenant.reconcile_interval_minutes,
            "notices": tenant.notices,
        }
    ).encode()


def decode_tenant(raw: bytes, cipher: TokenCipher) -> Tenant:
    doc = json.loads(raw)
    return Tenant(
        realm=doc["realm"],
        base_url=doc["base_url"],
        token=cipher.decrypt(doc["token_encrypted"]),
        delete_policy=DeletePolicy(doc.get("delete_policy", "ignore")),
        updated_at=doc.get("updated_at", ""),
        max_concurrency=doc.get("max_concurrency"),
        rate_limit_per_minute=doc.get("rate_limit_per_minute"),
        status="unauthorized" if doc.get("status") == "unauthorized" else "enabled",
        generation=int(doc.get("generation", 1)),
        realm_id=doc.get("realm_id"),
        reconcile_interval_minutes=doc.get("reconcile_interval_minutes"),
        notices=dict(doc.get("notices") or {}),
    )
