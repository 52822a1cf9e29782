"""What a tenant's downstream authenticates with (plain data; service.scim.auth turns it into headers).

Secrets never appear in repr(): these objects travel inside Downstream and Tenant, which get logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BasicAuth", "BearerToken", "ClientCredentials", "Credentials", "SecretCredentials"]


@dataclass(frozen=True, slots=True)
class BearerToken:
    """A static token, sent as `Authorization: Bearer`."""

    token: str = field(repr=False)
    type: Literal["bearer"] = "bearer"


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic (RFC 7617, UTF-8)."""

    username: str
    password: str = field(repr=False)
    type: Literal["basic"] = "basic"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """OAuth2 client credentials; the client authenticates to the token URL with HTTP Basic
    (client_secret_basic, which RFC 6749 requires every server to accept)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None  # sent as `audience` (Auth0, Okta custom servers); Keycloak ignores it
    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"


Credentials = BearerToken | BasicAuth | ClientCredentials
SecretCredentials = BasicAuth | ClientCredentials  # what a tenant stores besides (or instead of) a token
