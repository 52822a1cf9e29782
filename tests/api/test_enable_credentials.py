"""The enable body's credentials and lookup options: `token` or `auth` (bearer, basic, OAuth2 client
credentials), the `keycloak` preset; what is validated, stored and answered (never a secret)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from service.api.models import EnableTenant
from service.scim.credentials import BasicAuth, ClientCredentials
from tests.api.test_tenant_service import World

SECRET = "client-secret-value"
OAUTH2 = {
    "type": "oauth2_client_credentials",
    "token_url": "https://kc.example/realms/apps/protocol/openid-connect/token",
    "client_id": "svc",
    "client_secret": SECRET,
    "scope": "scim",
}


def request(**fields: object) -> EnableTenant:
    return EnableTenant.model_validate_json(
        json.dumps({"base_url": "https://kc.example/realms/apps/scim/v2", **fields})
    )


async def test_oauth2_credentials_are_validated_stored_and_never_answered() -> None:
    """The downstream is validated with the client credentials, the tenant stores them with the preset's
    lookup, and the answer shows how it authenticates without the secret."""
    world = World()
    enabled = await world.service().enable("acme", request(auth=OAUTH2, preset="keycloak"))
    [validated] = world.downstreams.validated
    assert validated.credentials == ClientCredentials(OAUTH2["token_url"], "svc", SECRET, "scim")
    [tenant] = world.records.writes
    assert (tenant.auth, tenant.preset, tenant.user_lookup) == (validated.credentials, "keycloak", "userName")
    answer = enabled.tenant.model_dump(mode="json")
    assert answer["auth"] == {
        "type": "oauth2_client_credentials",
        "endpoint": OAUTH2["token_url"],
        "client_id": "svc",
        "scope": "scim",
    }
    assert SECRET not in json.dumps(answer)


async def test_an_explicit_lookup_wins_over_the_preset_and_basic_is_stored() -> None:
    world = World()
    auth = {"type": "basic", "username": "svc", "password": SECRET}
    await world.service().enable("acme", request(auth=auth, preset="keycloak", user_lookup="externalId"))
    [tenant] = world.records.writes
    assert (tenant.auth, tenant.user_lookup, tenant.token) == (BasicAuth("svc", SECRET), "externalId", "")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"token": "t", "auth": {"type": "bearer", "token": "t"}},
        {"auth": {"type": "oauth2_client_credentials", "token_url": "https://x", "client_id": "c"}},
        {"auth": {"type": "basic", "username": "a:b", "password": "p"}},
        {"token": "t", "preset": "entra"},
    ],
    ids=["no credentials", "both", "no client secret", "colon in user name", "unknown preset"],
)
def test_malformed_credentials_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        request(**fields)


async def test_a_bearer_auth_is_the_token() -> None:
    world = World()
    await world.service().enable("acme", request(auth={"type": "bearer", "token": "tok"}))
    [tenant] = world.records.writes
    assert (tenant.token, tenant.auth) == ("tok", None)


async def test_the_django_scim2_preset_sends_puts_unless_the_enable_says_otherwise() -> None:
    """Preset `django-scim2` stores the capability override patch=false (django-scim2 answers 501 to the
    PATCH of a rename); a capability the enable gives wins over the preset's, the others are kept."""
    world = World()
    await world.service().enable("acme", request(token="t", preset="django-scim2"))
    await world.service().enable("beta", request(token="t", preset="django-scim2", capabilities={"max_results": 20}))
    await world.service().enable("gamma", request(token="t", preset="django-scim2", capabilities={"patch": True}))
    acme, beta, gamma = world.records.writes
    assert (acme.preset, acme.user_lookup, acme.capabilities.public()) == (
        "django-scim2",
        "externalId",
        {"patch": False},
    )
    assert beta.capabilities.public() == {"patch": False, "max_results": 20}
    assert gamma.capabilities.public() == {"patch": True}
