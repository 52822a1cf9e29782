"""Keycloak Admin API errors, named for what the caller does next (the convention of service.errors).

    ServiceError (service.errors)
    └── KeycloakError             status, method, path, Keycloak's short `error` text (never the body)
        ├── KeycloakUnavailable   connect error, timeout, 408, 429, 5xx: retriable, honours Retry-After
        ├── KeycloakUnauthorized  the token endpoint refused the client, or 401 even with a fresh token,
        │                         or 403: fix the credentials or the service account's roles
        └── KeycloakNotFound      404. Only `user_missing` means "this user does not exist" (and
                                  `group_missing` "this group"); any other 404 (realm gone, wrong base
                                  URL behind a proxy) must never be read as "deleted", or one
                                  misconfiguration would delete every user downstream
Anything else (other 4xx, a 2xx that is not the JSON expected) is a plain KeycloakError.
"""

from __future__ import annotations

from service.errors import ServiceError


class KeycloakError(ServiceError):
    def __init__(self, status: int | None, method: str, path: str, detail: str = "") -> None:
        self.status = status
        self.method = method
        self.path = path
        self.detail = detail
        label = status if status is not None else "no response"
        super().__init__(f"keycloak {method} {path} -> {label} {detail}".strip())


class KeycloakUnavailable(KeycloakError):
    retriable = True

    def __init__(
        self, status: int | None, method: str, path: str, detail: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(status, method, path, detail)
        self.retry_after = retry_after


class KeycloakUnauthorized(KeycloakError):
    pass


class KeycloakNotFound(KeycloakError):
    @property
    def user_missing(self) -> bool:
        """Keycloak's own answer for an absent user (`{"error":"User not found"}`), nothing else."""
        return self.detail.strip().lower() == "user not found"

    @property
    def group_missing(self) -> bool:
        """Keycloak's own answer for an absent group (`{"error":"Could not find group by id"}`), nothing else."""
        return self.detail.strip().lower() == "could not find group by id"
