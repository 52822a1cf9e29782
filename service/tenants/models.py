"""A tenant = one SCIM downstream a Keycloak realm's users are provisioned to: (realm, name), the name
`default` for the one a realm always had (service.domain.downstreams)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.domain.capabilities import NO_OVERRIDES, Overrides, overrides_of
from service.domain.downstreams import DEFAULT, split_tenant_key, tenant_key
from service.domain.groups import GroupDisplay, GroupOptions
from service.domain.mapping import DEFAULT_MAPPING, AttributeMapping, parse_mapping
from service.domain.plan import DeletePolicy
from service.errors import ConfigError, TenantUnreadable
from service.scim.client import Downstream
from service.scim.credentials import BasicAuth, ClientCredentials, SecretCredentials
from service.scim.presets import PresetName, preset_of
from service.scim.transport import UserLookup

TenantStatus = Literal["enabled", "unauthorized"]
BulkMode = Literal["auto", "off"]

NOTICES = {
    "groups_by_path": (
        "users are created with `groups` in the request: Keycloak sends no membership event for those, only "
        "paths, and no Keycloak access is configured to read the memberships. Configure OUTBOUND_SCIM_KEYCLOAK_* "
        "(then run a backfill or reconciliation), or add members through the group endpoints."
    ),
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
    generation: int = 1  # bumped by every enable / rotate: tells a stale "unauthorized" mark or gate apart
    realm_id: str | None = None  # the realm's internal id: plugins that send no realmName (playa) use it
    reconcile_interval_minutes: float | None = None  # periodic reconciliation; None: off
    notices: dict[str, str] = field(default_factory=dict)  # code -> when first seen: things an operator should fix
    groups: bool = False  # push groups and memberships too
    group_display: GroupDisplay = GroupDisplay.NAME  # a group's displayName: its name or its full path
    group_flatten: bool = False  # a member of a sub-group is also sent as a member of its ancestors
    group_paths: tuple[str, ...] = ()  # push only groups under these paths (empty, and no pattern: all)
    group_pattern: str | None = None  # ... or whose path matches this regular expression
    group_members_per_request: int = 100  # member operations in one PATCH request
    bulk: BulkMode = "auto"  # user writes as SCIM /Bulk when the downstream announces it; off: one by one
    auth: SecretCredentials | None = field(default=None, repr=False)  # None: Bearer `token`
    preset: PresetName | None = None  # what kind of downstream it is (service.scim.presets), as declared
    user_lookup: UserLookup = "externalId"  # the preset's, unless the enable said otherwise
    capabilities: Overrides = NO_OVERRIDES  # what the downstream supports, over what it announces
    mapping: AttributeMapping = DEFAULT_MAPPING  # which Keycloak value each SCIM attribute holds
    name: str = DEFAULT  # which of the realm's downstreams

    @property
    def key(self) -> str:
        """The downstream's identity as one string: what breakers, gates, parking and state are keyed by."""
        return tenant_key(self.realm, self.name)

    @property
    def group_options(self) -> GroupOptions:
        return GroupOptions(
            display=self.group_display,
            flatten=self.group_flatten,
            path_prefixes=self.group_paths,
            path_pattern=self.group_pattern,
            delete=self.delete_policy is DeletePolicy.DELETE,
            members_per_request=self.group_members_per_request,
        )

    @property
    def downstream(self) -> Downstream:
        return Downstream(
            self.key,
            self.base_url,
            self.token,
            self.max_concurrency,
            self.rate_limit_per_minute,
            self.generation,
            bulk=self.bulk == "auto",
            auth=self.auth,
            user_lookup=self.user_lookup,
            capabilities=self.capabilities,
            mapping=self.mapping,
        )

    def public(self) -> dict[str, Any]:
        """What the API and CLI may show: never the token."""
        return {
            "realm": self.realm,
            "name": self.name,
            "status": self.status,
            "base_url": self.base_url,
            "delete_policy": str(self.delete_policy),
            "max_concurrency": self.max_concurrency,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "realm_id": self.realm_id,
            "reconcile_interval_minutes": self.reconcile_interval_minutes,
            "bulk": self.bulk,
            "auth": auth_view(self.auth),
            "preset": self.preset,
            "user_lookup": self.user_lookup,
            "capabilities": self.capabilities.public(),
            "mapping": self.mapping.public(),
            "updated_at": self.updated_at,
            "notices": [
                {"code": code, "since": since, "detail": NOTICES.get(code, "")}
                for code, since in sorted(self.notices.items())
            ],
            **self._group_fields(),
        }

    def _group_fields(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "group_display": str(self.group_display),
            "group_flatten": self.group_flatten,
            "group_paths": list(self.group_paths),
            "group_pattern": self.group_pattern,
            "group_members_per_request": self.group_members_per_request,
        }


def auth_view(auth: SecretCredentials | None) -> dict[str, Any]:
    """How the tenant authenticates, as shown: never the secret (nor a field named like one: the token
    URL is its `endpoint`)."""
    shown = {k: v for k, v in _auth_fields(auth).items() if k != "token_url"}
    return {**shown, "endpoint": auth.token_url} if isinstance(auth, ClientCredentials) else shown


def _auth_fields(auth: SecretCredentials | None) -> dict[str, Any]:
    """Every field of the credentials but the secret."""
    if isinstance(auth, ClientCredentials):
        return {
            "type": auth.type,
            "token_url": auth.token_url,
            "client_id": auth.client_id,
            "scope": auth.scope,
            "audience": auth.audience,
        }
    if isinstance(auth, BasicAuth):
        return {"type": auth.type, "username": auth.username}
    return {"type": "bearer"}


KEYS_SETTING = "OUTBOUND_SCIM_TOKEN_KEY"
UNDECRYPTABLE = f"does not decrypt with any {KEYS_SETTING}"
UNDECRYPTABLE_FIX = (
    f"add the key it was written with to {KEYS_SETTING} (after the current first key) and restart, "
    "or enable the realm again with its downstream token"
)
MALFORMED_FIX = "enable the realm again with its downstream token, or disable it"


class TokenCipher:
    """Encrypts downstream tokens at rest (Fernet: AES-128-CBC + HMAC-SHA256).

    `keys` is a comma-separated list: the first key encrypts, every key decrypts (MultiFernet), so a key
    is rotated by putting the new one first, re-encrypting the records, then dropping the old one.
    """

    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ConfigError("token_key is empty: set one Fernet key, or several separated by commas")
        try:
            self._fernets = [Fernet(k.encode()) for k in parts]
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "every token_key entry must be a Fernet key (32 url-safe base64 bytes), separated by commas"
            ) from exc
        self._multi = MultiFernet(self._fernets)

    def encrypt(self, token: str) -> str:
        return self._multi.encrypt(token.encode()).decode()

    def decrypt(self, blob: str) -> str:
        """Raises InvalidToken when no key decrypts `blob`."""
        return self._multi.decrypt(blob.encode()).decode()

    def is_current(self, blob: str) -> bool:
        """Whether `blob` was encrypted with the first key (it needs no re-encryption)."""
        try:
            self._fernets[0].decrypt(blob.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, blob: str) -> str:
        """`blob` re-encrypted with the first key; raises InvalidToken when no key decrypts it."""
        return self._multi.rotate(blob.encode()).decode()


def encode_tenant(tenant: Tenant, cipher: TokenCipher) -> bytes:
    """The record: every secret encrypted (the static token in `token_encrypted`; a Basic password or an
    OAuth2 client secret in `auth.secret_encrypted`, with no `token_encrypted`, so a replica of an older
    version finds the record unreadable and holds the realm's changes rather than sending no credentials)."""
    secret = (
        {"auth": _encode_auth(tenant.auth, cipher)}
        if tenant.auth
        else {"token_encrypted": cipher.encrypt(tenant.token)}
    )
    return json.dumps(
        {
            "realm": tenant.realm,
            "name": tenant.name,
            "base_url": tenant.base_url,
            **secret,
            "delete_policy": str(tenant.delete_policy),
            "updated_at": tenant.updated_at,
            "max_concurrency": tenant.max_concurrency,
            "rate_limit_per_minute": tenant.rate_limit_per_minute,
            "status": tenant.status,
            "generation": tenant.generation,
            "realm_id": tenant.realm_id,
            "reconcile_interval_minutes": tenant.reconcile_interval_minutes,
            "bulk": tenant.bulk,
            "preset": tenant.preset,
            "user_lookup": tenant.user_lookup,
            "capabilities": tenant.capabilities.public(),
            **({"mapping": tenant.mapping.public()} if tenant.mapping != DEFAULT_MAPPING else {}),
            "notices": tenant.notices,
            **tenant._group_fields(),
        }
    ).encode()


def _encode_auth(auth: SecretCredentials, cipher: TokenCipher) -> dict[str, Any]:
    if isinstance(auth, ClientCredentials):
        return {**_auth_fields(auth), "secret_encrypted": cipher.encrypt(auth.client_secret)}
    return {**_auth_fields(auth), "secret_encrypted": cipher.encrypt(auth.password)}


def _decode_auth(doc: dict[str, Any], secret: str) -> SecretCredentials:
    """Raises KeyError / ValueError for a malformed entry."""
    if doc["type"] == "oauth2_client_credentials":
        return ClientCredentials(
            str(doc["token_url"]), str(doc["client_id"]), secret, doc.get("scope"), doc.get("audience")
        )
    if doc["type"] == "basic":
        return BasicAuth(str(doc["username"]), secret)
    raise ValueError("unknown auth type")


def decode_tenant(raw: bytes, cipher: TokenCipher, realm: str) -> Tenant:
    """The tenant stored under the key `realm` (its tenant key: service.domain.downstreams); TenantUnreadable
    (naming the fix, never the token) when the record is malformed or none of the keys decrypts its token."""
    doc = _document(raw, realm)
    try:
        blob = doc["auth"]["secret_encrypted"] if "auth" in doc else doc["token_encrypted"]
        secret = cipher.decrypt(blob)
    except InvalidToken as exc:
        raise TenantUnreadable(realm, UNDECRYPTABLE, UNDECRYPTABLE_FIX) from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise _malformed(realm, exc) from exc
    try:
        auth = _decode_auth(doc["auth"], secret) if "auth" in doc else None
        return Tenant(
            realm=doc["realm"],
            base_url=doc["base_url"],
            token="" if auth else secret,
            auth=auth,
            preset=preset_of(doc.get("preset")),
            user_lookup="userName" if doc.get("user_lookup") == "userName" else "externalId",
            delete_policy=DeletePolicy(doc.get("delete_policy", "ignore")),
            updated_at=doc.get("updated_at", ""),
            max_concurrency=doc.get("max_concurrency"),
            rate_limit_per_minute=doc.get("rate_limit_per_minute"),
            status="unauthorized" if doc.get("status") == "unauthorized" else "enabled",
            generation=int(doc.get("generation", 1)),
            realm_id=doc.get("realm_id"),
            reconcile_interval_minutes=doc.get("reconcile_interval_minutes"),
            notices=dict(doc.get("notices") or {}),
            groups=bool(doc.get("groups", False)),
            group_display=GroupDisplay(doc.get("group_display", "name")),
            group_flatten=bool(doc.get("group_flatten", False)),
            group_paths=tuple(doc.get("group_paths") or ()),
            group_pattern=doc.get("group_pattern"),
            group_members_per_request=int(doc.get("group_members_per_request", 100)),
            bulk="off" if doc.get("bulk") == "off" else "auto",
            capabilities=overrides_of(doc.get("capabilities")),
            mapping=parse_mapping(doc["mapping"]) if "mapping" in doc else DEFAULT_MAPPING,
            name=split_tenant_key(realm)[1],  # the record key says which: a record cannot move itself
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise _malformed(realm, exc) from exc


def record_fields(raw: bytes) -> dict[str, Any]:
    """The fields of a record that need no key (generation, realm_id ...), read leniently: {} if not JSON."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if k not in ("token_encrypted", "auth")}


def reencrypted(raw: bytes, cipher: TokenCipher, realm: str) -> bytes | None:
    """The record with its secret (token, or auth secret) encrypted under the first key, every other field
    as it was; None when it already is. TenantUnreadable when no key decrypts it (it is left alone)."""
    doc = _document(raw, realm)
    holder, key = (doc.get("auth"), "secret_encrypted") if "auth" in doc else (doc, "token_encrypted")
    blob = holder.get(key) if isinstance(holder, dict) else None
    if not isinstance(holder, dict) or not isinstance(blob, str):
        raise _malformed(realm, KeyError(key))
    if cipher.is_current(blob):
        return None
    try:
        holder[key] = cipher.rotate(blob)
    except InvalidToken as exc:
        raise TenantUnreadable(realm, UNDECRYPTABLE, UNDECRYPTABLE_FIX) from exc
    return json.dumps(doc).encode()


def _document(raw: bytes, realm: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise _malformed(realm, exc) from exc
    if not isinstance(doc, dict):
        raise _malformed(realm, TypeError("not a JSON object"))
    return doc


def _malformed(realm: str, exc: Exception) -> TenantUnreadable:
    """The exception's type only: its message could quote the record."""
    return TenantUnreadable(realm, f"is not a valid tenant record ({type(exc).__name__})", MALFORMED_FIX)
