"""The on-disk user state across restarts, on the real broker: a restart reads the changelog from its
checkpoint only, a deleted state file is rebuilt from scratch to the same state, and a checkpoint
beyond the end of a recreated changelog starts over."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from structlog.testing import capture_logs

from service.app import Service
from service.domain.state import UserState
from service.kafka_topics import COMPACTED
from service.pipeline.state_db import StateDb
from service.settings import Settings
from tests.conftest import SCIM_TOKEN
from tests.integration.scenarios import burst, converged
from tests.support import Api, Publisher, ScimServer, create_source_topics, make_settings, running_service, wait_until

PARTITIONS = 3
USERS = 12


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[tuple[Service, MutableMapping[str, Any]]]:
    """The service in-process; yields it with the fields of its `apply.assigned` log line."""
    with capture_logs() as logs:
        async with running_service(settings) as running:
            assigned = [e for e in logs if e["event"] == "apply.assigned"]
            assert len(assigned) == 1, assigned
            yield running, assigned[0]


def restored(service: Service, start: str) -> float:
    value = service.metrics.registry.get_sample_value("outbound_scim_state_restored_records_total", {"from": start})
    return value or 0.0


async def seeded(kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path) -> Settings:
    """A first run applies a burst for USERS users; its stop flushes and checkpoints the state."""
    settings = make_settings(kafka_bootstrap, internal_partitions=PARTITIONS, state_dir=str(tmp_path / "state"))
    await create_source_topics(settings)
    async with service(settings) as (first, assigned):
        assert assigned["records_restored"] == 0
        realm, base = "state-restore", scim_server.base_url()
        assert first.api_port is not None
        assert (await Api(first.api_port).enable(realm, base, SCIM_TOKEN))[0] == 201
        async with Publisher(kafka_bootstrap) as publisher:
            await publisher.send_all(settings.admin_events_topic, burst(realm, USERS, "s"), partitions=PARTITIONS)
        await wait_until(lambda: converged(base, USERS, "s"), timeout=60, what=f"{USERS} users converged")
    return settings


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.user_state_topic, p) for p in range(PARTITIONS)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def on_disk(settings: Settings) -> tuple[dict[bytes, bytes], dict[int, int | None]]:
    """Every row and checkpoint in the state file (the service is stopped: its slot is free)."""
    assert settings.state_dir is not None
    db = StateDb.open(Path(settings.state_dir), settings.user_state_topic)
    try:
        rows = {k: v for p in range(PARTITIONS) for k, v in db.items(p)}
        return rows, {p: db.checkpoint(p) for p in range(PARTITIONS)}
    finally:
        db.close()


async def write_changelog(settings: Settings, records: list[tuple[bytes, bytes, int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value, partition in records:
            await producer.send_and_wait(settings.user_state_topic, key=key, value=value, partition=partition)
    finally:
        await producer.stop()


def written_elsewhere(count: int) -> list[tuple[bytes, bytes, int]]:
    """States as another replica would have written them while this one was down."""
    return [
        (f"state-restore/other{n}".encode(), UserState(downstream_id=f"d{n}").to_json(), n % PARTITIONS)
        for n in range(count)
    ]


async def test_a_restart_reads_only_the_records_after_its_checkpoint(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """The stopped run checkpointed the changelog's end; 7 records written after it are exactly what the
    next start reads, and they are in its state."""
    settings = await seeded(kafka_bootstrap, scim_server, tmp_path)
    rows, checkpoints = on_disk(settings)
    assert checkpoints == await end_offsets(settings)
    assert len(rows) == USERS
    await write_changelog(settings, written_elsewhere(7))
    async with service(settings) as (second, assigned):
        assert assigned["records_restored"] == 7
        assert assigned["from_checkpoint"] == list(range(PARTITIONS))
        assert assigned["from_scratch"] == []
        assert assigned["users"] == USERS + 7
        assert restored(second, "checkpoint") == 7
        assert restored(second, "scratch") == 0
    rows_after, checkpoints_after = on_disk(settings)
    assert checkpoints_after == await end_offsets(settings)
    assert rows_after == {**rows, **{k: v for k, v, _ in written_elsewhere(7)}}


async def test_a_deleted_state_file_is_rebuilt_from_scratch_to_the_same_state(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """Without its state file (a new pod) the service reads every changelog record and ends with the rows
    the first run had."""
    settings = await seeded(kafka_bootstrap, scim_server, tmp_path)
    rows, _ = on_disk(settings)
    assert settings.state_dir is not None
    shutil.rmtree(settings.state_dir)
    total = sum((await end_offsets(settings)).values())
    assert total >= USERS
    async with service(settings) as (second, assigned):
        assert assigned["records_restored"] == total
        assert assigned["from_scratch"] == list(range(PARTITIONS))
        assert restored(second, "scratch") == total
        assert restored(second, "checkpoint") == 0
    assert on_disk(settings)[0] == rows


async def test_a_checkpoint_beyond_a_recreated_changelog_restores_from_scratch(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """The changelog topic is deleted and made again with one record per partition: every partition's
    checkpoint is past the new end, so each drops its rows and reads the new topic from the beginning."""
    settings = await seeded(kafka_bootstrap, scim_server, tmp_path)
    _, checkpoints = on_disk(settings)
    await recreate_topic(settings)
    fresh = written_elsewhere(PARTITIONS)
    await write_changelog(settings, fresh)
    assert all(checkpoint is not None and checkpoint > 1 for checkpoint in checkpoints.values()), checkpoints
    async with service(settings) as (_, assigned):
        assert assigned["from_scratch"] == list(range(PARTITIONS))
        assert assigned["records_restored"] == PARTITIONS
    rows, checkpoints_after = on_disk(settings)
    assert checkpoints_after == dict.fromkeys(range(PARTITIONS), 1)
    assert rows == {k: v for k, v, _ in fresh}


async def recreate_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([settings.user_state_topic])

        async def made_again() -> bool:
            try:
                await admin.create_topics([NewTopic(settings.user_state_topic, PARTITIONS, 1, topic_configs=COMPACTED)])
            except KafkaError:
                return False
            return True

        await wait_until(made_again, timeout=60, what="the changelog topic recreated")
    finally:
        await admin.close()
