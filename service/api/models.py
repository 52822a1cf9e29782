"""The admin API's request and response bodies: the contract the OpenAPI document is generated from.

Requests are validated strictly (JSON types as documented: `"5"` is not a number) but ignore fields
they do not know, so a client written for a newer or older version keeps working. Response models
carry no secret at all: a downstream token, Basic password or OAuth2 client secret can only go in
(`EnableTenant.token`, `EnableTenant.auth`), never out.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    model_validator,
)

from service.domain.downstreams import DEFAULT
from service.domain.groups import GroupDisplay
from service.domain.mapping import MappingError, parse_mapping
from service.domain.plan import DeletePolicy
from service.domain.scim import valid_resource_id

__all__ = [
    "ActivityEntryView",
    "ActivityList",
    "ActivitySummaryView",
    "AuthView",
    "BackfillProgressView",
    "BasicAuthRequest",
    "BearerAuthRequest",
    "DeadLetterList",
    "DisabledTenant",
    "DownstreamAccount",
    "EnableTenant",
    "EnabledTenant",
    "Health",
    "HeldRecordView",
    "HeldSource",
    "LinkQueued",
    "LinkUser",
    "MappingEntry",
    "NoticeView",
    "OAuth2ClientCredentialsRequest",
    "ParkedList",
    "Problem",
    "Readiness",
    "RealmWarningView",
    "Reconcile",
    "ReconcileReport",
    "ReplayAll",
    "Replayed",
    "SentRequestView",
    "StaleUser",
    "SyncReport",
    "TenantList",
    "TenantView",
    "UnreadableTenant",
]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)


class Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- errors -------------------------------------------------------------------------------------------


class Problem(Response):
    """Every error answer, whatever the status: a stable code to branch on and a sentence for a person."""

    error: str = Field(description="stable, snake_case: what went wrong (e.g. not_enabled, invalid_request)")
    detail: str = Field(description="what happened and, where there is one, what to do next")


# --- requests -----------------------------------------------------------------------------------------


def _resource_id(value: str) -> str:
    if valid_resource_id(value) is None:
        raise ValueError("is the account's id: a non-empty string without /, ?, # or control characters")
    return value


class BearerAuthRequest(Request):
    """A static bearer token (the same as the enable body's `token`)."""

    type: Literal["bearer"]
    token: SecretStr = Field(min_length=1, description="stored encrypted, never shown")


class BasicAuthRequest(Request):
    """HTTP Basic."""

    type: Literal["basic"]
    username: str = Field(min_length=1, pattern="^[^:]+$", description="without a colon (RFC 7617)")
    password: SecretStr = Field(min_length=1, description="stored encrypted, never shown")


class OAuth2ClientCredentialsRequest(Request):
    """OAuth2 client credentials: an access token from the token URL, renewed before it expires and once
    after a 401. The client authenticates to the token URL with HTTP Basic (client_secret_basic)."""

    type: Literal["oauth2_client_credentials"]
    token_url: str = Field(
        min_length=1,
        description="e.g. https://kc.example/realms/x/protocol/openid-connect/token; same rules as base_url",
    )
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = Field(min_length=1, description="stored encrypted, never shown")
    scope: str | None = Field(default=None, min_length=1, description="sent as `scope` when given")
    audience: str | None = Field(default=None, min_length=1, description="sent as `audience` when given")


AuthRequest = Annotated[
    BearerAuthRequest | BasicAuthRequest | OAuth2ClientCredentialsRequest, Field(discriminator="type")
]


class CapabilityOverrides(Request):
    """What the downstream supports, where it announces otherwise (null: as its ServiceProviderConfig says)."""

    patch: bool | None = Field(
        default=None, description="false: user updates are PUTs of the full user; group sync is refused"
    )
    filter: bool | None = Field(default=None, description="false: lookups list every account instead of filtering")
    max_results: PositiveInt | None = Field(default=None, description="the largest page a listing asks for")
    bulk: bool | None = Field(default=None, description="false: never send /Bulk")
    etag: bool | None = Field(
        default=None, description="false: user writes without If-Match; true: with the version the server gave"
    )


class MappingEntry(Request):
    """One SCIM attribute of the downstream and the Keycloak value it holds (see the operations guide)."""

    source: str = Field(description="username, email, firstName, lastName, or attributes.<name> (its first value)")
    target: str = Field(
        description="a SCIM path: userName, name.givenName, emails, phoneNumbers, title, locale, preferredLanguage, "
        "... or urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:<employeeNumber|department|...|manager>"
    )
    type: str | None = Field(default=None, description="emails and phoneNumbers: the value's type (default work)")


class EnableTenant(Request):
    """The whole tenant: a field left out takes its default (an enable of an enabled realm is a rotation).
    Exactly one of `token` and `auth` says how requests to the downstream authenticate."""

    base_url: str = Field(min_length=1, description="the downstream's SCIM base URL, e.g. https://x.example/scim/v2")
    token: SecretStr | None = Field(
        default=None, min_length=1, description="the downstream's bearer token; stored encrypted, never shown"
    )
    auth: AuthRequest | None = Field(
        default=None, description="instead of `token`: bearer, basic or oauth2_client_credentials"
    )
    preset: Literal["keycloak", "django-scim2"] | None = Field(
        default=None,
        description="a known kind of downstream, setting the defaults of the options it names "
        "(keycloak: user_lookup userName; django-scim2: capabilities patch false); see the operations guide",
    )
    user_lookup: Literal["externalId", "userName"] | None = Field(
        default=None,
        description="how an account not linked yet is found: by externalId (default), or by userName, taken "
        "only when its externalId is ours (for downstreams whose externalId filter finds nothing); "
        "null: the preset's",
    )
    delete_policy: DeletePolicy = Field(
        default=DeletePolicy.IGNORE, description="what a Keycloak deletion does downstream"
    )
    max_concurrency: PositiveInt | None = Field(
        default=None, description="requests in flight to it (null: service default)"
    )
    rate_limit_per_minute: PositiveInt | None = Field(default=None, description="pace requests to it (null: unpaced)")
    realm_id: str | None = Field(
        default=None, min_length=1, description="the realm's internal id, for plugins sending no name"
    )
    reconcile_interval_minutes: PositiveFloat | None = Field(
        default=None, description="reconcile periodically (null: off)"
    )
    backfill: bool = Field(default=False, description="then push every existing Keycloak user (needs Keycloak access)")
    groups: bool = Field(default=False, description="push groups and memberships too (refused if it cannot PATCH)")
    group_display: GroupDisplay = Field(default=GroupDisplay.NAME, description="a group's displayName: name or path")
    group_flatten: bool = Field(default=False, description="a sub-group's members are members of its ancestors too")
    group_paths: list[str] = Field(default_factory=list, description="push only groups under these paths")
    group_pattern: str | None = Field(
        default=None, min_length=1, description="... or whose path matches this regular expression"
    )
    group_members_per_request: PositiveInt = Field(default=100, le=1000, description="member operations per PATCH")
    bulk: Literal["auto", "off"] = Field(
        default="auto", description="user writes as SCIM /Bulk when the downstream announces it (off: one by one)"
    )
    capabilities: CapabilityOverrides | None = Field(
        default=None,
        description='overrides for a downstream whose ServiceProviderConfig is wrong, e.g. {"patch": false}; '
        "see the operations guide",
    )
    mapping: list[MappingEntry] | None = Field(
        default=None,
        description="which Keycloak value each SCIM attribute holds, checked against the downstream's /Schemas "
        "(null: username, firstName, lastName, email to userName, name.givenName, name.familyName, emails)",
    )

    @model_validator(mode="after")
    def _pattern_compiles(self) -> EnableTenant:
        if (self.token is None) == (self.auth is None):
            raise ValueError("give the downstream's credentials as either `token` or `auth`, not both")
        if self.mapping is not None:
            try:
                parse_mapping([entry.model_dump(exclude_none=True) for entry in self.mapping])
            except MappingError as exc:
                raise ValueError(f"mapping: {exc}") from exc
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as exc:
                raise ValueError(f"group_pattern is not a regular expression: {exc}") from exc
        return self


class Reconcile(Request):
    dry_run: bool = Field(default=False, description="report only, queue no fix")
    remove_extra_members: bool = Field(
        default=False,
        description="with group sync: also remove the members of our groups downstream that Keycloak does not "
        "have (default: report them only)",
    )


class LinkUser(Request):
    downstream_id: Annotated[
        str,
        AfterValidator(_resource_id),
        Field(
            description="the downstream account's SCIM id (a conflict's dead letter names it); not . or ..",
            json_schema_extra={"pattern": "^[^/?#\\u0000-\\u001f\\u007f-\\u009f]+$"},
        ),
    ]


class ReplayAll(Request):
    """Replays every dead letter, of every tenant and those without one. The body may be left out."""

    @model_validator(mode="before")
    @classmethod
    def _no_tenant(cls, data: Any) -> Any:
        """A client written for the tenant filter gets told where it went, not a replay of everything."""
        if isinstance(data, dict) and data.get("tenant") is not None:
            raise ValueError("a tenant's dead letters are replayed by POST /tenants/{realm}/dead-letters/replay")
        return data


def _absent(value: object) -> bool:
    """Fields left out of an answer when there is nothing to say (rather than sent as null)."""
    return value is None


# --- responses ----------------------------------------------------------------------------------------


class Health(Response):
    status: Literal["ok"] = "ok"


class Readiness(Response):
    ready: bool
    reasons: list[str] = Field(description="why not ready, each with its fix; empty when ready")


class NoticeView(Response):
    code: str
    since: str
    detail: str


class RealmWarningView(Response):
    code: str = Field(description="listener_missing, representation_off, events_config_unreadable, or groups_refused")
    detail: str = Field(description="what to switch on, and where")


class AuthView(Response):
    """How the tenant's requests authenticate, without the secret."""

    type: Literal["bearer", "basic", "oauth2_client_credentials"]
    username: str | None = Field(default=None, exclude_if=_absent, description="basic")
    endpoint: str | None = Field(
        default=None, exclude_if=_absent, description="oauth2_client_credentials: the token URL it was given"
    )
    client_id: str | None = Field(default=None, exclude_if=_absent, description="oauth2_client_credentials")
    scope: str | None = Field(default=None, exclude_if=_absent)
    audience: str | None = Field(default=None, exclude_if=_absent)


class TenantView(Response):
    """A tenant (one downstream app of a realm) as operators see it: never a secret."""

    realm: str
    downstream: str = Field(
        default=DEFAULT, description="which of the realm's downstream apps (`default`: the one of /tenants/{realm})"
    )
    status: Literal["enabled", "unauthorized"]
    base_url: str
    delete_policy: DeletePolicy
    max_concurrency: int | None
    rate_limit_per_minute: int | None
    realm_id: str | None
    reconcile_interval_minutes: float | None
    updated_at: str
    notices: list[NoticeView]
    circuit: Literal["closed", "half_open", "open"] = Field(description="the downstream's circuit breaker here")
    lookups: Literal["unknown", "filter", "scan"] = Field(description="how users are found downstream")
    groups: bool
    group_display: GroupDisplay
    group_flatten: bool
    group_paths: list[str]
    group_pattern: str | None
    group_members_per_request: int
    bulk: Literal["auto", "off"]
    auth: AuthView
    preset: Literal["keycloak", "django-scim2"] | None
    user_lookup: Literal["externalId", "userName"] = Field(description="how an account not linked yet is found")
    capabilities: dict[str, bool | int] = Field(
        default_factory=dict,
        description="the capability overrides given with the enable or by its preset (only those set)",
    )
    writes: Literal["unknown", "patch", "put"] = Field(
        default="unknown", description="how user updates are sent downstream: PATCH, or PUT of the full user"
    )
    mapping: list[dict[str, str]] = Field(
        default_factory=list, description="which Keycloak value each SCIM attribute holds ({source, target[, type]})"
    )
    warnings: list[RealmWarningView] | None = Field(
        default=None,
        exclude_if=_absent,
        description="the realm's event settings, read now; absent when not read (no Keycloak access, or a listing)",
    )


class UnreadableTenant(Response):
    """A stored tenant record this replica cannot read (a token key is missing, or it is malformed)."""

    realm: str
    downstream: str = Field(
        default=DEFAULT, description="which of the realm's downstream apps (`default`: the one of /tenants/{realm})"
    )
    status: Literal["unreadable"] = "unreadable"
    detail: str = Field(description="why, and what fixes it")


class TenantList(Response):
    tenants: list[TenantView | UnreadableTenant] = Field(description="sorted by realm, then downstream")


class DownstreamList(Response):
    downstreams: list[TenantView | UnreadableTenant] = Field(description="one realm's downstream apps, by name")


class BackfillProgressView(Response):
    realm: str
    downstream: str = Field(
        default=DEFAULT, description="which of the realm's downstream apps (`default`: the one of /tenants/{realm})"
    )
    state: Literal["running", "done", "failed"]
    done: int
    total: int | None
    skipped: int
    groups: int = Field(default=0, description="groups published (a tenant with group sync)")
    memberships: int = Field(default=0, description="memberships published")
    downstream_listed: int | None = Field(
        default=None,
        description="accounts the downstream held when the backfill listed them (null: no complete listing, "
        "each user is looked up before it is written)",
    )
    rate_per_second: float | None
    elapsed_seconds: float
    error: str | None


class EnabledTenant(TenantView):
    backfill: BackfillProgressView | None = Field(
        default=None, exclude_if=_absent, description="the backfill started with the enable; absent unless asked"
    )


class DisabledTenant(Response):
    realm: str
    downstream: str = Field(
        default=DEFAULT, description="which of the realm's downstream apps (`default`: the one of /tenants/{realm})"
    )
    status: Literal["disabled"] = "disabled"


class HeldSource(Response):
    """Where a dead-lettered record came from (Kafka Connect's error headers); null for parked changes."""

    topic: str | None
    partition: str | None
    offset: str | None


class HeldRecordView(Response):
    """A parked change or a dead letter: what an operator needs to decide on a replay, no attribute values."""

    partition: int
    offset: int
    timestamp_ms: int
    tenant: str | None = Field(description="null for a record without a realm (a poison record)")
    reason: str | None
    error: str | None
    source: HeldSource
    replayable: bool = Field(description="false for an oversized record kept without its value")
    downstream_id: str | None = Field(description="a conflict's downstream account")
    owner: str | None = Field(description="the externalId of a conflict's downstream account")
    user_id: str | None
    event_type: str | None
    event_id: str | None
    op: str | None


class ParkedList(Response):
    parked: list[HeldRecordView] = Field(description="oldest first")


class DeadLetterList(Response):
    dead_letters: list[HeldRecordView] = Field(description="oldest first")


class Replayed(Response):
    replayed: int = Field(description="records sent back to the topic they came from")


class LinkQueued(Response):
    realm: str
    user_id: str
    downstream_id: str
    queued: Literal[True] = True


class Count(Response):
    count: int


class MissingUsers(Count):
    ids: list[str] = Field(description="the first ones: Keycloak user ids with no downstream user")


class StaleUser(Response):
    id: str
    attributes: list[str] = Field(description="the attributes that differ")


class StaleUsers(Count):
    users: list[StaleUser]


class DownstreamAccount(Response):
    id: JsonValue
    externalId: JsonValue  # the SCIM attribute names
    userName: JsonValue


class ExtraUsers(Count):
    users: list[DownstreamAccount] = Field(
        description="downstream users no Keycloak user matches (deleted only when one carries the id of a user "
        "the service knows deleted, under delete policy delete)"
    )


class DuplicateUser(Response):
    id: str = Field(description="the Keycloak user id")
    accounts: list[DownstreamAccount] = Field(description="every downstream account carrying it as externalId")


class DuplicateUsers(Count):
    users: list[DuplicateUser] = Field(
        description="Keycloak users with more than one downstream account carrying their id (reported, never "
        "touched: remove the one that is not linked by hand)"
    )


class ReconcileReport(Response):
    realm: str
    dry_run: bool
    keycloak_users: int
    downstream_users: int
    missing: MissingUsers
    stale: StaleUsers
    extra: ExtraUsers
    duplicates: DuplicateUsers = Field(default_factory=lambda: DuplicateUsers(count=0, users=[]))
    fixes_queued: int
    seconds: float
    groups: dict[str, Any] | None = Field(
        default=None,
        exclude_if=_absent,
        description="with group sync: keycloak_groups, downstream_groups, missing, stale, extra, members_missing, "
        "members_extra (counts and the first ids) and the fixes queued (group_fixes_queued, "
        "membership_fixes_queued, member_removals_queued)",
    )


class SyncReport(Response):
    realm: str
    user_id: str
    result: str = Field(description="the outcome (created, updated, ...), or failed")
    reason: str | None = None
    downstream_id: str | None = None
    error: str | None = Field(default=None, description="why it failed (result failed)")
    steps: list[dict[str, Any]] = Field(description="what Keycloak said, the plan, each request and its answer")


# --- the activity log -----------------------------------------------------------------------------------


class SentRequestView(Response):
    method: str
    path: str = Field(
        description="from the downstream's base URL, with its query; `(in /Bulk)`: an operation of a bulk request"
    )
    status: int | None = Field(description="the downstream's answer (null: none, e.g. unreachable)")
    answer: str = Field(description="the start of the answer's body (or why there was none); never a header")


class ActivityEntryView(Response):
    time: float = Field(description="when it happened, epoch seconds")
    kind: Literal["user", "group", "circuit", "backfill", "reconcile", "sync"]
    outcome: str = Field(
        description="user / group / sync: created, updated, deactivated, deleted, unchanged, coalesced, parked, "
        "dead_lettered, skipped, failed ...; circuit: open, half_open, closed; backfill: running, done, failed; "
        "reconcile: clean, drift"
    )
    subject: str | None = Field(default=None, description="the Keycloak user or group id")
    name: str | None = Field(default=None, description="the username or group name, as last known")
    action: str | None = Field(default=None, description="what the plan decided: create, update, delete, none ...")
    reason: str | None = None
    sent: list[SentRequestView] = Field(default_factory=list, description="what went to the downstream, in order")
    detail: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="changed attributes (user), backfill progress, reconciliation counts, the error of a failure",
    )


class ActivitySummaryView(Response):
    last_success: float | None = Field(description="the last user or group change the downstream took")
    changes_last_hour: int = Field(description="user and group changes (any outcome) in the last 60 minutes")
    circuit: Literal["open", "half_open", "closed"] | None = Field(
        description="the last breaker transition any replica reported (null: none in the log)"
    )
    last_failure: ActivityEntryView | None = Field(description="the last change parked or dead-lettered")
    backfill: dict[str, JsonValue] | None = Field(description="the latest backfill progress any replica reported")
    drift: dict[str, JsonValue] | None = Field(description="the latest reconciliation's counts, with its time")


class ActivityList(Response):
    """A downstream's provisioning activity as every replica reads it from the activity topic."""

    realm: str
    downstream: str
    entries: list[ActivityEntryView] = Field(description="newest first")
    summary: ActivitySummaryView
