"""Bad input never stops the consumer: it is skipped or dead-lettered with a reason, and counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TypedDict

import pytest
from aiokafka import AIOKafkaConsumer

from service.app import Service
from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import Api, Publisher, ScimServer, create_source_topics, make_settings, running_service


@pytest.fixture
async def big_records_pipeline(kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[Pipeline]:
    """Source topics that accept 8 MB records (the broker default is 1 MB), the service's default 1 MB limit."""
    settings = make_settings(kafka_bootstrap)
    await create_source_topics(settings, configs={"max.message.bytes": str(8 * 1024 * 1024)})
    async with running_service(settings) as service, Publisher(kafka_bootstrap, 8 * 1024 * 1024) as publisher:
        yield Pipeline(settings, service, Api(service.api_port or 0), publisher, scim_server)


class DeadLetter(TypedDict):
    """A record read back from the dead-letter topic, its headers decoded."""

    value: bytes | None
    headers: dict[str, str]


async def read_dead_letters(service: Service, count: int) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        service.settings.dead_letter_topic,
        bootstrap_servers=service.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        while len(letters) < count:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, f"only {len(letters)} dead letters arrived"
            for records in batch.values():
                for r in records:
                    letters.append({"value": r.value, "headers": {k: v.decode() for k, v in r.headers}})
    finally:
        await consumer.stop()
    return letters


async def test_poison_records_are_dead_lettered_and_the_consumer_goes_on(big_records_pipeline: Pipeline) -> None:
    """Non-JSON, a JSON list, wrong types, a missing realm, a 5 MB record -> dead letters with
    Kafka Connect context headers; a valid event published after them is still applied."""
    pipeline = big_records_pipeline
    realm = pipeline.realm()
    await pipeline.enable(realm)
    topic = pipeline.settings.admin_events_topic
    poison = [
        b"{not json",
        b'["a", "list"]',
        json.dumps({**ev.create_user(realm, "x", "x"), "time": "yesterday"}).encode(),
        json.dumps(
            {k: v for k, v in ev.create_user(realm, "x", "x").items() if k not in ("realmId", "realmName")}
        ).encode(),
        json.dumps({**ev.create_user(realm, "x", "x"), "padding": "z" * 5_000_000}).encode(),
    ]
    for value in poison:
        await pipeline.publisher.send(topic, value, partition=0)
    await pipeline.admin(ev.create_user(realm, "after-poison", "survivor"), partitions=1)
    await pipeline.wait_user(realm, "after-poison", userName="survivor")

    letters = await read_dead_letters(pipeline.service, len(poison))
    reasons = sorted(letter["headers"]["outbound_scim.reason"] for letter in letters)
    assert reasons == sorted(["malformed_json", "wrong_shape", "wrong_shape", "missing_realm", "record_too_large"])
    for letter in letters:
        headers = letter["headers"]
        assert headers["__connect.errors.topic"] == topic
        assert headers["__connect.errors.partition"] == "0"
        assert headers["__connect.errors.offset"].isdigit()
        assert headers["__connect.errors.exception.class.name"] == "service.errors.PoisonRecord"
        assert headers["__connect.errors.exception.message"]
    kept = {letter["value"] for letter in letters if letter["headers"]["outbound_scim.reason"] != "record_too_large"}
    assert kept == set(poison[:4]), "dead letters keep the original value byte for byte"
    [oversized] = [x for x in letters if x["headers"]["outbound_scim.reason"] == "record_too_large"]
    assert oversized["value"] == b"", "an oversized value is not copied: it stays in its source topic"
    assert oversized["headers"]["outbound_scim.original_size"] == str(len(poison[4]))
    for reason in ("malformed_json", "missing_realm", "record_too_large"):
        assert await pipeline.counted("outbound_scim_dead_letters_total", reason=reason) == 1


async def test_non_user_events_and_unknown_realms_are_skipped_and_counted(pipeline: Pipeline) -> None:
    """A non-user admin event and a realm without a tenant are skipped and counted; the consumer goes on."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(
        ev.admin_event(realm, "c", "CREATE", {"clientId": "app"}, resource_type="CLIENT"),
        ev.create_user("realm-nobody-enabled", "ghost", "ghost"),
        partitions=1,
    )
    await pipeline.admin(ev.create_user(realm, "real", "real"), partitions=1)
    await pipeline.wait_user(realm, "real", userName="real")
    assert await pipeline.counted("outbound_scim_events_total", type="other", outcome="not_a_user_resource") == 1
    assert (
        pipeline.counter(
            "outbound_scim_changes_total", tenant="unknown", downstream="unknown", outcome="skipped_no_tenant"
        )
        == 1
    )


async def test_odd_user_ids_are_provisioned(pipeline: Pipeline) -> None:
    """Federated ids (`f:<component>:<id>`), quotes, slashes and unicode survive the filter and the path."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    odd = ["f:3a1b:jdoe@corp", 'quote"and\\back', "slash/and space", "ünïcödé-ид"]
    await pipeline.admin(*[ev.create_user(realm, uid, f"odd{i}") for i, uid in enumerate(odd)])
    for i, uid in enumerate(odd):
        await pipeline.wait_user(realm, uid, userName=f"odd{i}")
    await pipeline.admin(*[ev.update_user(realm, uid, enabled=False) for uid in odd])
    for uid in odd:
        await pipeline.wait_user(realm, uid, active=False)
    assert SCIM_TOKEN
