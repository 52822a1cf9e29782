"""canaille 0.3.6's SCIM server (an OpenID Connect provider; pytest-iam runs it) as a real downstream.

canaille runs in a venv of its own (scripts/canaille/requirements.txt says why), one per module, started
by scripts/canaille/server.py with a memory backend and one OAuth2 client allowed client_credentials.

What its SCIM server does, as these tests observe it (docs/operations/canaille-downstream.md):
ServiceProviderConfig answers 401 without a token and says filter, bulk and sort unsupported; any
`count` on GET /Users or /Groups answers 500 (a TypeError in canaille's paging), so the service's
enable check (`GET /Users?count=1`) fails and the tenant cannot be enabled; `emails[].type` and
`primary` are refused (400 "Extra inputs are not permitted"); externalId is neither stored nor
returned; a duplicate userName is created again (201, no 409); a group needs members at creation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.domain import scim
from tests.support import ROOT, Api, free_port, make_settings, running_service

pytestmark = pytest.mark.integration

SCRIPTS = ROOT / "scripts" / "canaille"
VENV = SCRIPTS / ".cache" / "venv"


@dataclass(frozen=True)
class Canaille:
    scim_url: str
    token_url: str
    client_id: str
    client_secret: str

    def oauth2(self) -> dict[str, Any]:
        return {
            "type": "oauth2_client_credentials",
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }


def _venv_python() -> Path:
    """canaille's own venv, rebuilt when requirements.txt changes (pip's cache makes a rebuild quick)."""
    requirements = SCRIPTS / "requirements.txt"
    stamp = VENV / "requirements.sha256"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(wanted)
    return VENV / "bin" / "python"


@pytest.fixture(scope="module")
def canaille() -> Iterator[Canaille]:
    python = _venv_python()
    process = subprocess.Popen(
        [str(python), str(SCRIPTS / "server.py"), str(free_port())], stdout=subprocess.PIPE, text=True
    )
    try:
        # The line comes once the socket listens: requests queue from then on, no wait needed.
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"canaille exited with {process.wait()}"
        started = json.loads(line)
        yield Canaille(started["scim_url"], started["token_url"], started["client_id"], started["client_secret"])
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _token(http: aiohttp.ClientSession, c: Canaille) -> str:
    pair = base64.b64encode(f"{c.client_id}:{c.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {pair}"}
    async with http.post(c.token_url, data={"grant_type": "client_credentials"}, headers=headers) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["access_token"])


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None, body: Any = None, **params: str
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, params=params, headers=headers) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def test_canaille_scim_server_as_the_service_meets_it(canaille: Canaille, http: aiohttp.ClientSession) -> None:
    """The behaviours of canaille 0.3.6's SCIM server the service depends on, each as observed (the
    module docstring lists them); a change in any of them fails here first."""
    spc_url = f"{canaille.scim_url}/ServiceProviderConfig"
    assert (await _call(http, "GET", spc_url, None))[0] == 401
    token = await _token(http, canaille)
    status, spc = await _call(http, "GET", spc_url, token)
    assert status == 200, spc
    assert scim.filter_supported(spc) is False and scim.patch_supported(spc) is True
    assert spc["bulk"]["supported"] is False

    users = f"{canaille.scim_url}/Users"
    assert (await _call(http, "GET", users, token, count="1"))[0] == 500  # the enable check's request
    assert (await _call(http, "GET", users, token, startIndex="1", count="500"))[0] == 500  # a scan's page

    values = {"userName": "ada", "givenName": "Ada", "familyName": "Lovelace", "email": "ada@example.com"}
    status, refused = await _call(http, "POST", users, token, scim.user_resource("kc-ada", values))
    assert status == 400 and "Extra inputs are not permitted" in refused["detail"], refused

    without_email = {k: v for k, v in values.items() if k != "email"}
    status, created = await _call(http, "POST", users, token, scim.user_resource("kc-ada", without_email))
    assert status == 201, created
    assert "externalId" not in created
    assert created["name"] == {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada Lovelace"}
    status, again = await _call(http, "POST", users, token, scim.user_resource("kc-ada-2", without_email))
    assert status == 201 and again["id"] != created["id"], again  # no uniqueness on userName

    given_only = {"userName": "cyd", "givenName": "Cyd"}
    status, no_family = await _call(http, "POST", users, token, scim.user_resource("kc-cyd", given_only))
    assert status == 400 and "familyName" in no_family["detail"], no_family

    ops = scim.patch_operations({"familyName": "King", "active": False}, {**without_email, "familyName": "King"})
    status, patched = await _call(http, "PATCH", f"{users}/{created['id']}", token, scim.patch_request(ops))
    assert status == 200, patched  # PATCH answers the resource
    assert (patched["name"]["familyName"], patched["active"]) == ("King", False)

    status, listed = await _call(http, "GET", users, token, filter='userName eq "nobody"')
    assert status == 200 and listed["totalResults"] >= 2, listed  # the filter is ignored: everyone is listed

    status, group = await _call(http, "POST", f"{canaille.scim_url}/Groups", token, scim.group_resource("g-1", "staff"))
    assert status == 400 and "members" in group["detail"], group


async def test_a_canaille_tenant_cannot_be_enabled(canaille: Canaille, kafka_bootstrap: str) -> None:
    """The enable check's `GET /Users?count=1` answers 500 on canaille 0.3.6: the enable is refused as
    `downstream_error` naming that request, no secret is answered, and nothing is stored."""
    realm = f"canaille-{uuid.uuid4().hex[:8]}"
    async with running_service(make_settings(kafka_bootstrap)) as service:
        assert service.api_port is not None
        api = Api(service.api_port)
        status, body = await api.call(
            "PUT", f"/tenants/{realm}", {"base_url": canaille.scim_url, "auth": canaille.oauth2()}
        )
        assert status == 422, body
        assert body["error"] == "downstream_error", body
        assert "Users" in str(body) and "500" in str(body), body
        assert canaille.client_secret not in str(body)
        assert (await api.call("GET", f"/tenants/{realm}"))[0] == 404
