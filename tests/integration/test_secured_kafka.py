"""The service on the broker's SASL_SSL listener (SCRAM-SHA-512, TLS from the tests' CA) under the
StandardAuthorizer: it works with exactly the ACLs of `required_acls` (the list docs/kafka-production.md
shows), and without any one of them it refuses to start with a message naming that ACL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from devkit.events import create_user
from service.app import Service
from service.kafka_access import Acl, KafkaAccessDenied, required_acls
from service.kafka_protocol import Operation
from service.settings import Settings
from tests.conftest import SCIM_TOKEN
from tests.support import (
    Api,
    Publisher,
    ScimServer,
    SecuredListener,
    by_external_id,
    create_source_topics,
    downstream_users,
    grant,
    make_settings,
    running_service,
    wait_until,
)

REFUSAL_BOUND_SECONDS = 30.0


def secured_settings(plain: str, secured: SecuredListener) -> tuple[Settings, Settings]:
    """Fresh topics and groups, as the service sees them (SASL_SSL) and as the tests' super user does."""
    service = make_settings(plain, **secured.settings())
    return service, service.model_copy(
        update={"kafka_bootstrap_servers": plain, "kafka_security_protocol": "PLAINTEXT", "kafka_sasl_mechanism": None}
    )


async def test_the_pipeline_runs_over_sasl_ssl_with_exactly_the_documented_acls(
    kafka_bootstrap: str, secured_kafka: SecuredListener, scim_server: ScimServer
) -> None:
    """Granted only required_acls, the service starts, a created user reaches the downstream, and it logs
    no access problem (the start-up topic check ran: DescribeConfigs is in the list)."""
    settings, plain = secured_settings(kafka_bootstrap, secured_kafka)
    await create_source_topics(plain)
    await grant(kafka_bootstrap, secured_kafka.principal, required_acls(settings))
    with capture_logs() as logs:
        async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
            assert service.api_port is not None
            realm, base = "secured", scim_server.base_url("secured")
            status, body = await Api(service.api_port).enable(realm, base, SCIM_TOKEN)
            assert status in (200, 201), body
            await publisher.send_all(settings.admin_events_topic, [create_user(realm, "u-1", "jdoe")])

            async def arrived() -> bool:
                return "u-1" in by_external_id(await downstream_users(base, SCIM_TOKEN))

            await wait_until(arrived, timeout=60, what="u-1 downstream over SASL_SSL")
    events = {entry["event"] for entry in logs}
    assert not events & {"kafka.access.denied", "kafka.topics.unchecked", "kafka.topic.misconfigured"}, events


def _cases() -> list[Any]:
    """Each ACL of the list by its index (resolved against each test's own settings); DescribeConfigs, the
    same check for every topic, once."""
    template = make_settings("127.0.0.1:1")
    cases, describe_configs = [], False
    for index, acl in enumerate(required_acls(template)):
        if acl.operation is Operation.DESCRIBE_CONFIGS:
            if describe_configs:
                continue
            describe_configs = True
        name = acl.name.removeprefix(f"{template.group_id}.").strip("-")
        cases.append(pytest.param(index, id=f"{acl.operation.title}-{acl.resource.name.lower()}-{name}"))
    return cases


@pytest.mark.parametrize("index", _cases())
async def test_each_acl_removed_is_named_at_start(
    kafka_bootstrap: str, secured_kafka: SecuredListener, index: int
) -> None:
    """Without one ACL the service refuses to start within a bounded time, naming that ACL (operation and
    resource); without DescribeConfigs it starts and warns that the topic check was skipped."""
    settings, plain = secured_settings(kafka_bootstrap, secured_kafka)
    await create_source_topics(plain)
    acls = required_acls(settings)
    removed = acls[index]
    await grant(kafka_bootstrap, secured_kafka.principal, [a for a in acls if a != removed])
    service = Service(settings)
    started = time.monotonic()
    with capture_logs() as logs:
        if removed.operation is Operation.DESCRIBE_CONFIGS:
            await asyncio.wait_for(service.start(), REFUSAL_BOUND_SECONDS)
            await service.stop()
            warnings = [e for e in logs if e["event"] == "kafka.topics.unchecked"]
            assert warnings and str(removed) in warnings[0]["missing"], logs
            return
        with pytest.raises(KafkaAccessDenied) as refused:
            await asyncio.wait_for(service.start(), REFUSAL_BOUND_SECONDS)
    elapsed = time.monotonic() - started
    assert refused.value.missing == [removed], str(refused.value)
    assert str(removed) in str(refused.value)
    assert any(e["event"] == "kafka.access.denied" and e["missing"] == [str(removed)] for e in logs), logs
    assert elapsed < REFUSAL_BOUND_SECONDS


def test_acl_titles_read_as_kafka_writes_them() -> None:
    """An ACL reads `<Operation> on <resource type> <name>`, with Kafka's operation names."""
    acl = Acl(required_acls(make_settings("127.0.0.1:1"))[0].resource, "t", Operation.DESCRIBE_CONFIGS, "why")
    assert str(acl) == "DescribeConfigs on topic t"
