"""Security of the admin surface: SSRF refusals at enable time, and no token anywhere an operator reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import Api, Publisher, ScimServer, create_source_topics, make_settings, running_service


@pytest.fixture
async def strict_pipeline(kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[Pipeline]:
    """Production egress policy: https only, no private or loopback downstreams."""
    settings = make_settings(kafka_bootstrap, allow_http_hosts="", allow_private_networks=False)
    await create_source_topics(settings)
    async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
        yield Pipeline(settings, service, Api(service.api_port or 0), publisher, scim_server)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "forbidden_address"),
        ("https://169.254.169.254/scim", "forbidden_address"),
        ("https://[fd00:ec2::254]/scim", "forbidden_address"),
        ("https://metadata.google.internal/computeMetadata/v1/", "forbidden_address"),
        ("https://127.0.0.1:8443/scim", "forbidden_address"),
        ("https://10.1.2.3/scim", "forbidden_address"),
        ("https://localhost/scim", "forbidden_address"),
        ("https://[::ffff:127.0.0.1]/scim", "forbidden_address"),
        ("http://127.0.0.1:{port}/t", "forbidden_address"),
        ("http://scim.example.com/scim/v2", "insecure_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("gopher://127.0.0.1:70/", "invalid_url"),
        ("ftp://example.com/scim", "invalid_url"),
        ("https://user:pass@scim.example.com/", "invalid_url"),
        ("not a url", "invalid_url"),
    ],
)
async def test_enable_refuses_internal_and_non_https_targets(strict_pipeline: Pipeline, url: str, reason: str) -> None:
    """Link-local, metadata, private and loopback targets, plain http and other schemes -> 400 with a reason."""
    url = url.format(port=strict_pipeline.scim.port)
    status, body = await strict_pipeline.api.enable("ssrf", url, SCIM_TOKEN)
    assert (status, body["error"]) == (400, reason), body
    assert (await strict_pipeline.api.call("GET", "/tenants/ssrf"))[0] == 404


async def test_admin_api_limits_body_size(pipeline: Pipeline) -> None:
    """A request body over API_MAX_BODY_BYTES is refused with 413 before anything is stored."""
    huge = {"base_url": pipeline.scim.base_url(), "token": "x" * 100_000}
    status, body = await pipeline.api.call("PUT", "/tenants/big", huge)
    assert status == 413, body
    assert (await pipeline.api.call("GET", "/tenants/big"))[0] == 404
