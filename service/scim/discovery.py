"""Validate a downstream before a tenant is enabled: is it a SCIM provider, and do the credentials work?

`GET {base}/ServiceProviderConfig` must answer JSON describing a SCIM provider, then `GET
{base}/Users?count=1` must succeed. Both are sent authenticated (some servers, Keycloak 26.7's SCIM API
among them, answer even ServiceProviderConfig with 401 to a request without a token; others answer it
to anyone, so it alone does not prove the credentials). With OAuth2 client credentials the token URL
is held to the same egress rules as the base URL, and a token endpoint that refuses the client is the
reason `unauthorized`. Failures become `EnableRefused` with a reason an operator can act on. Redirects are not
followed here either: a base URL that redirects is refused, the operator gives the final one. Both
requests go around the tenant's gate: an open breaker of the current config neither holds nor counts
them (a rotation is often what fixes the downstream that opened it).
"""

from __future__ import annotations

from typing import Any

from service.domain import scim
from service.domain.mapping import DEFAULT_MAPPING, MappingError, check_against_schemas
from service.errors import EnableRefused, ScimError, ScimNotFound, ScimRejected, ScimTransient
from service.scim.auth import TOKEN_PATH
from service.scim.client import Downstream, ScimClient
from service.scim.credentials import ClientCredentials
from service.scim.egress import EgressPolicy


async def validate_downstream(client: ScimClient, ds: Downstream, egress: EgressPolicy) -> dict[str, Any]:
    """The downstream's ServiceProviderConfig, once it proved to be a SCIM provider taking the token."""
    await egress.check_resolved(ds.base_url)
    credentials = ds.credentials
    if isinstance(credentials, ClientCredentials):
        await egress.check_resolved(credentials.token_url, what="the token URL")
    try:
        config = await client.send_once(ds, "GET", "ServiceProviderConfig", detached=True)
    except ScimError as exc:
        raise _refusal(exc, "ServiceProviderConfig") from exc
    if not scim.is_service_provider_config(config):
        raise EnableRefused("not_scim", "ServiceProviderConfig did not answer a SCIM JSON document")
    try:
        listing = await client.send_once(ds, "GET", "Users", params={"count": "1"}, detached=True)
    except ScimError as exc:
        raise _refusal(exc, "Users") from exc
    if not isinstance(listing, dict) or scim.LIST_SCHEMA not in (listing.get("schemas") or []):
        raise EnableRefused("not_scim", "GET /Users did not answer a SCIM ListResponse")
    assert isinstance(config, dict)
    if ds.mapping != DEFAULT_MAPPING:
        await _check_mapping(client, ds)
    return config


async def _check_mapping(client: ScimClient, ds: Downstream) -> None:
    """A mapping other than the default names attributes the downstream must declare: read its /Schemas
    (and /ResourceTypes, where the User resource type lists its schema extensions) with the same
    credentials, and refuse the entry it lacks (`invalid_mapping`, a 400: the request's to fix)."""
    documents = []
    for path in ("Schemas", "ResourceTypes"):
        try:
            documents.append(await client.send_once(ds, "GET", path, detached=True))
        except ScimError as exc:
            refusal = _refusal(exc, path)
            raise EnableRefused(refusal.reason, f"{refusal.detail} (a mapping is checked against it)") from exc
    try:
        check_against_schemas(ds.mapping, *documents)
    except MappingError as exc:
        raise EnableRefused("invalid_mapping", str(exc)) from exc


def _refusal(exc: ScimError, what: str) -> EnableRefused:
    if exc.path == TOKEN_PATH:
        return _token_refusal(exc)
    if isinstance(exc, ScimNotFound):
        return EnableRefused("not_found", f"GET {what} answered 404: check the base URL and its path prefix")
    if isinstance(exc, ScimRejected) and exc.unauthorized:
        return EnableRefused("unauthorized", f"GET {what} answered {exc.status}: the token was refused")
    if isinstance(exc, ScimTransient) and exc.status is None:
        return EnableRefused("unreachable", f"GET {what} failed: {exc.detail or 'no response'}")
    if isinstance(exc, ScimRejected) and exc.reason in ("forbidden_address", "invalid_url"):
        return EnableRefused(exc.reason, exc.detail)
    if isinstance(exc, ScimRejected) and exc.reason == "redirect":
        return EnableRefused(
            "redirect", f"GET {what} answered {exc.status}, {exc.detail}: give the final SCIM base URL"
        )
    if isinstance(exc, ScimRejected) and exc.reason != "rejected":  # e.g. response_too_large
        return EnableRefused("downstream_error", f"GET {what} answered {exc.status}: {exc.reason}")
    return EnableRefused("downstream_error", f"GET {what} answered {exc.status}")


def _token_refusal(exc: ScimError) -> EnableRefused:
    """The OAuth2 token request failed before any SCIM request was sent."""
    if isinstance(exc, ScimRejected) and exc.unauthorized:
        return EnableRefused("unauthorized", f"the token URL refused the client credentials ({exc.detail})")
    if isinstance(exc, ScimTransient) and exc.status is None:
        return EnableRefused("unreachable", f"the token URL failed: {exc.detail or 'no response'}")
    if isinstance(exc, ScimRejected) and exc.reason in ("forbidden_address", "invalid_url"):
        return EnableRefused(exc.reason, f"the token URL: {exc.detail}")
    if isinstance(exc, ScimRejected) and exc.reason == "redirect":
        return EnableRefused("redirect", f"the token URL answered {exc.status}, {exc.detail}: give the final URL")
    return EnableRefused("downstream_error", f"the token URL answered {exc.status}")
