"""The error taxonomy, named for what the caller does next.

ServiceError (retriable = False)
├── ConfigError          bad settings -> refuse to start
├── PoisonRecord         unparseable / unsupported record -> count, dead-letter, advance the offset
├── Parked               a change set aside until a replay (the reason is in the message)
├── EnableRefused        a downstream failed validation -> 4xx with a reason, nothing stored
├── TenantUnreadable     a stored tenant record this replica cannot read (a token key is missing):
│                        retriable; its changes wait, then park, until the key or record is fixed
├── StageExited          stage 1's child process ended on its own -> the service stops and exits
│                        non-zero (the container restarts it)
└── ScimError            status, scim_type, method, path, detail (never a request body)
    ├── ScimTransient    connect error, timeout, 408, 429, 5xx: retriable, honours Retry-After
    │   └── CircuitOpen  the tenant's breaker holds traffic: park instead of waiting
    ├── ScimNotFound     404: re-resolve or re-create
    ├── ScimConflict     409: look up by externalId / userName and adopt
    │   └── ScimOwnershipConflict  the account holding the userName (the group holding the displayName)
    │                              belongs to another externalId: never written; dead-lettered for an
    │                              operator (resolve or link)
    └── ScimRejected     not retriable; dead-lettered under its typed `reason`:
                         rejected            other 4xx (401/403: the token is refused -> the tenant
                                             is marked unauthorized)
                         token_refused       the OAuth2 token endpoint refused the client credentials
                                             (the tenant is marked unauthorized, as for a 401)
                         redirect            a 3xx: redirects are never followed
                         forbidden_address   the egress policy refuses the target address
                         invalid_url         the tenant's base URL does not parse
                         invalid_id          the downstream gave an id that is not one path segment
                         incomplete_user     a PUT of the full user (downstreams without PATCH) with
                                             no userName known to send
                         response_too_large  the body is over OUTBOUND_SCIM_HTTP_MAX_RESPONSE_BYTES
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    retriable: ClassVar[bool] = False


class ConfigError(ServiceError):
    """Settings that cannot work; the service refuses to start."""


class PoisonRecord(ServiceError):
    """A Kafka record that can never be processed; `reason` is a short stable label for metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Parked(ServiceError):
    """A change set aside in the parking topic; the message says why."""


class EnableRefused(ServiceError):
    """A downstream failed validation; `reason` is one of not_found, unauthorized, not_scim, unreachable,
    redirect, invalid_url, insecure_url, forbidden_address, downstream_error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TenantUnreadable(ServiceError):
    """The realm's tenant record cannot be read here: its changes must wait (or park), never be skipped.

    `reason` completes "the record of realm X ..."; `fix` says what the operator does. Neither holds a token.
    """

    retriable = True
    label: ClassVar[str] = "tenant_unreadable"  # the parking reason of the realm's changes

    def __init__(self, realm: str, reason: str, fix: str) -> None:
        super().__init__(f"the record of realm {realm} {reason}")
        self.realm = realm
        self.reason = reason
        self.fix = fix


class StageExited(ServiceError):
    """A stage run as a child process ended without being asked to: the service cannot go on without it."""

    def __init__(self, stage: str, exit_code: int) -> None:
        super().__init__(f"{stage} (child process) exited with code {exit_code}; stopping the service")
        self.stage = stage
        self.exit_code = exit_code


class ScimError(ServiceError):
    def __init__(
        self,
        status: int | None,
        method: str,
        path: str,
        scim_type: str | None = None,
        detail: str = "",
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.scim_type = scim_type
        self.detail = detail
        label = status if status is not None else "no response"
        super().__init__(f"{method} {path} -> {label}{f' ({scim_type})' if scim_type else ''} {detail}".strip())


class ScimTransient(ScimError):
    retriable = True

    def __init__(
        self,
        status: int | None,
        method: str,
        path: str,
        scim_type: str | None = None,
        detail: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, method, path, scim_type, detail)
        self.retry_after = retry_after


class CircuitOpen(ScimTransient):
    pass


class ScimNotFound(ScimError):
    pass


class ScimConflict(ScimError):
    pass


# a conflict's detail when a POST is answered with a resource that another externalId owns
ANSWERED_WITH_ANOTHERS = "the POST was answered with a resource that belongs to someone else"


class ScimOwnershipConflict(ScimConflict):
    """The downstream resource that blocks a create is owned by another externalId (`owner`): an account
    holding the userName (`resource` "Users") or a group holding the displayName ("Groups"), or the
    account a POST was answered with (`detail` says so)."""

    def __init__(
        self,
        downstream_id: str,
        owner: str,
        *,
        resource: str = "Users",
        look_alike: bool = False,
        detail: str | None = None,
    ) -> None:
        if look_alike:
            default = "the account holding this userName shows no owner but other email addresses: a look-alike"
        elif resource == "Users":
            default = "the account holding this userName belongs to another user"
        else:
            default = "the group holding this displayName belongs to another group"
        super().__init__(409, "POST", resource, "uniqueness", detail or default)
        self.downstream_id = downstream_id
        self.owner = owner


class ScimRejected(ScimError):
    """Retrying cannot help. `reason` says why, so callers never parse the message (see the tree above)."""

    def __init__(
        self,
        status: int | None,
        method: str,
        path: str,
        scim_type: str | None = None,
        detail: str = "",
        *,
        reason: str = "rejected",
    ) -> None:
        super().__init__(status, method, path, scim_type, detail)
        self.reason = reason

    @property
    def unauthorized(self) -> bool:
        """The downstream refuses the tenant's credentials: its token, or (OAuth2) its client secret."""
        return self.status in (401, 403) or self.reason == "token_refused"
