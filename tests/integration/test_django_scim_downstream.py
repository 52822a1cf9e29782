"""django-scim2 0.23's SCIM server as the service meets it (the session's `django_scim`, scripts/django_scim).

What it does with our requests, as observed here (docs/operations/downstream-compatibility.md): every
endpoint answers 401 without the bearer token; ServiceProviderConfig says PATCH supported, filter, bulk,
sort and etag unsupported, maxResults 50; externalId is stored and answered, but a filter on it finds
nothing (its filter knows userName, name and active only), a userName filter finds regardless of case;
emails keep value and primary, not type; a duplicate userName is a 409 without scimType; PATCH takes
replace of userName, name.givenName / name.familyName, emails and active, but answers 501 to a replace
of displayName or name.formatted and to any remove (so to every rename we PATCH), and to a member
removal by value filter on /Groups; PUT of the full user works; DELETE answers 204. The preset
`django-scim2` therefore sends a user's changes as PUT, lookups scan (filter unsupported).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.domain import scim
from tests.django_scim import DjangoScim

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _call(
    http: aiohttp.ClientSession, server: DjangoScim, method: str, path: str, body: Any = None, **params: str
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with http.request(method, f"{server.scim_url}/{path}", json=body, params=params, headers=headers) as r:
        return r.status, await r.json(content_type=None) if r.status != 204 else None


async def test_django_scim2_as_the_service_meets_it(django_scim: DjangoScim, http: aiohttp.ClientSession) -> None:
    """Each behaviour of django-scim2 the service's preset and lookups rely on (the module docstring lists
    them); a change in any of them fails here first."""
    async with http.get(f"{django_scim.scim_url}/ServiceProviderConfig") as anonymous:
        assert anonymous.status == 401
    status, spc = await _call(http, django_scim, "GET", "ServiceProviderConfig")
    assert status == 200, spc
    assert (scim.patch_supported(spc), scim.filter_supported(spc), scim.max_results(spc)) == (True, False, 50)
    assert (spc["bulk"]["supported"], spc["etag"]["supported"]) == (False, False)

    tag = uuid.uuid4().hex[:8]
    name = f"ada.{tag}"
    values = {"userName": name, "givenName": "Ada", "familyName": "Lovelace", "email": f"{name}@example.com"}
    status, created = await _call(http, django_scim, "POST", "Users", scim.user_resource(f"kc-{tag}", values))
    assert status == 201, created
    assert created["externalId"] == f"kc-{tag}"
    assert created["emails"] == [{"value": f"{name}@example.com", "primary": True}]  # type is dropped
    user = scim.user_path(created["id"])

    status, again = await _call(http, django_scim, "POST", "Users", scim.user_resource(f"kc-2-{tag}", values))
    assert status == 409 and "scimType" not in again, again

    status, by_external_id = await _call(
        http, django_scim, "GET", "Users", filter=scim.eq_filter("externalId", f"kc-{tag}")
    )
    assert status == 200 and by_external_id["totalResults"] == 0, by_external_id
    status, by_name = await _call(http, django_scim, "GET", "Users", filter=scim.eq_filter("userName", name.upper()))
    assert status == 200 and [r["id"] for r in by_name["Resources"]] == [created["id"]], by_name

    rename = scim.patch_operations({"familyName": "King"}, {**values, "familyName": "King"})
    status, refused = await _call(http, django_scim, "PATCH", user, scim.patch_request(rename))
    assert status == 501, refused
    emptied = scim.patch_operations({"givenName": None}, {**values, "givenName": None})
    assert (await _call(http, django_scim, "PATCH", user, scim.patch_request(emptied)))[0] == 501
    simple = scim.patch_operations({"email": f"{name}@example.org", "active": False}, values)
    status, patched = await _call(http, django_scim, "PATCH", user, scim.patch_request(simple))
    assert status == 200, patched
    assert (patched["emails"][0]["value"], patched["active"]) == (f"{name}@example.org", False)

    status, put = await _call(
        http, django_scim, "PUT", user, scim.user_resource(f"kc-{tag}", {**values, "familyName": "King"})
    )
    assert status == 200, put
    assert (put["name"]["familyName"], put["displayName"], put["active"]) == ("King", "Ada King", True)

    status, group = await _call(http, django_scim, "POST", "Groups", scim.group_resource(f"g-{tag}", f"staff-{tag}"))
    assert status == 201, group
    path = scim.group_path(group["id"])
    status, joined = await _call(http, django_scim, "PATCH", path, scim.patch_request([scim.members_add([put["id"]])]))
    assert status == 200 and [m["value"] for m in joined["members"]] == [put["id"]], joined
    removal = scim.patch_request(scim.member_removals([put["id"]]))
    assert (await _call(http, django_scim, "PATCH", path, removal))[0] == 501

    assert (await _call(http, django_scim, "DELETE", user))[0] == 204
    assert (await _call(http, django_scim, "GET", user))[0] == 404
