"""The service's internal topics: created when missing, then checked as they are (an operator may have
made them, or changed them since) against what the service needs, at every start."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from service.errors import ConfigError
from service.kafka_access import (
    TOPIC_NOT_AUTHORIZED,
    UNKNOWN_TOPIC,
    KafkaAccessDenied,
    missing_topic_acls,
    required_acls,
)
from service.kafka_protocol import ClusterMetadata, Operation, authorized_metadata
from service.settings import Settings

log = structlog.get_logger(__name__)

COMPACTED = {"cleanup.policy": "compact"}
TOPIC_ALREADY_EXISTS = 36
DAY_MS = 24 * 3600 * 1000
CHECKED_CONFIGS = ("cleanup.policy", "retention.ms", "min.insync.replicas")


def internal_topics(settings: Settings) -> list[NewTopic]:
    """The changes topic and its user-state changelog must be co-partitioned: same count, same key."""
    n, rf = settings.internal_partitions, settings.internal_replication_factor
    topics = [
        NewTopic(settings.changes_topic, n, rf),
        NewTopic(settings.user_state_topic, n, rf, topic_configs=COMPACTED),
        NewTopic(settings.tenants_topic, 1, rf, topic_configs=COMPACTED),
        NewTopic(settings.dead_letter_topic, 1, rf),
        NewTopic(settings.parking_topic, n, rf),
        NewTopic(settings.replay_cursors_topic, 1, rf, topic_configs=COMPACTED),
    ]
    if settings.activity_enabled:
        topics.append(NewTopic(settings.activity_topic, n, rf, topic_configs=activity_configs(settings)))
    return topics


def activity_configs(settings: Settings) -> dict[str, str]:
    """The activity log is kept by time and size, never compacted: it is a log, bounded (decision 0020)."""
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(int(settings.activity_retention_hours * 3600 * 1000)),
        "retention.bytes": str(settings.activity_retention_bytes),
    }


# -- what the service needs of its topics (pure) ---------------------------------------------------


@dataclass(frozen=True)
class ObservedTopic:
    """A topic as the broker describes it; `configs` is empty when they could not be read."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


class Severity(StrEnum):
    ERROR = "error"  # correctness breaks: refuse to start
    WARNING = "warning"  # works, with a risk the operator should know about


@dataclass(frozen=True)
class TopicProblem:
    severity: Severity
    topic: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.problem} -> {self.fix}"


def check_topics(settings: Settings, topics: dict[str, ObservedTopic]) -> list[TopicProblem]:
    """What differs from what the service needs, worst first.

    Errors: the changes and user-state topics not co-partitioned (a user's state would be restored on
    another replica than the one applying their changes); a state topic (user state, tenants, replay
    cursors) that deletes old records, or a changes / parking topic that compacts them (records lost);
    min.insync.replicas above the replication factor (no write can succeed). Warnings: the rest."""
    s = settings
    problems: list[TopicProblem] = []

    def add(severity: Severity, topic: str, problem: str, fix: str) -> None:
        problems.append(TopicProblem(severity, topic, problem, fix))

    changes, state = topics.get(s.changes_topic), topics.get(s.user_state_topic)
    if changes and state and changes.partitions != state.partitions:
        add(
            Severity.ERROR,
            s.user_state_topic,
            f"{state.partitions} partitions, the changes topic {s.changes_topic} has {changes.partitions}: "
            "they must be co-partitioned",
            "give both topics the same partition count (kafka-topics --alter --partitions)",
        )
    compacted = {s.user_state_topic: Severity.ERROR, s.tenants_topic: Severity.ERROR, s.replay_cursors_topic: None}
    not_compacted = {s.changes_topic: Severity.ERROR, s.parking_topic: Severity.ERROR, s.dead_letter_topic: None}
    not_compacted[s.activity_topic] = None  # compacted, it would keep one entry per downstream: a warning
    for topic in topics.values():
        policy = topic.configs.get("cleanup.policy")
        if policy is not None:
            policies = {p.strip() for p in policy.split(",")}
            if topic.name in compacted and policies != {"compact"}:
                add(
                    compacted[topic.name] or Severity.WARNING,
                    topic.name,
                    f"cleanup.policy={policy}: its records are the latest value per key and must be kept",
                    f"kafka-configs --alter --entity-type topics --entity-name {topic.name} "
                    "--add-config cleanup.policy=compact",
                )
            if topic.name in not_compacted and "compact" in policies:
                add(
                    not_compacted[topic.name] or Severity.WARNING,
                    topic.name,
                    f"cleanup.policy={policy}: compaction drops all but the last record of a user, "
                    "and each record is needed",
                    f"kafka-configs --alter --entity-type topics --entity-name {topic.name} "
                    "--add-config cleanup.policy=delete",
                )
        min_isr = topic.configs.get("min.insync.replicas")
        if min_isr is not None and min_isr.isdigit():
            isr = int(min_isr)
            if isr > topic.replication_factor:
                add(
                    Severity.ERROR,
                    topic.name,
                    f"min.insync.replicas={isr} exceeds its replication factor {topic.replication_factor}: "
                    "no write can succeed",
                    "lower min.insync.replicas or add replicas",
                )
            elif topic.replication_factor > 1 and isr == topic.replication_factor:
                add(
                    Severity.WARNING,
                    topic.name,
                    f"min.insync.replicas={isr} equals its replication factor: one broker down stops every write",
                    f"set min.insync.replicas={topic.replication_factor - 1}",
                )
            elif topic.replication_factor > 1 and isr < 2:
                add(
                    Severity.WARNING,
                    topic.name,
                    "min.insync.replicas=1: an acknowledged write may be lost with its leader",
                    "set min.insync.replicas=2 (with replication factor 3)",
                )
        if topic.replication_factor < s.internal_replication_factor:
            add(
                Severity.WARNING,
                topic.name,
                f"replication factor {topic.replication_factor}, OUTBOUND_SCIM_INTERNAL_REPLICATION_FACTOR "
                f"is {s.internal_replication_factor}",
                "reassign its partitions to more brokers (kafka-reassign-partitions)",
            )
        retention = topic.configs.get("retention.ms")
        keep_days = {s.parking_topic: 7, s.dead_letter_topic: 7, s.changes_topic: 1}.get(topic.name)
        if keep_days and retention is not None and retention.lstrip("-").isdigit():
            ms = int(retention)
            if 0 <= ms < keep_days * DAY_MS:
                add(
                    Severity.WARNING,
                    topic.name,
                    f"retention.ms={ms} (under {keep_days} days): records not yet applied or replayed may be deleted",
                    f"raise retention.ms to at least {keep_days * DAY_MS} (or -1)",
                )
    return sorted(problems, key=lambda p: p.severity != Severity.ERROR)


# -- at start ----------------------------------------------------------------------------------------


async def ensure_topics(settings: Settings, extra: list[NewTopic] | None = None) -> None:
    """Create the missing internal topics, then check the principal's access and the topics' configs:
    a ConfigError names what must change; warnings are logged."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        await _create_missing(settings, admin, internal_topics(settings) + (extra or []))
        names = [t.name for t in internal_topics(settings)]
        metadata = await _visible_metadata(admin, settings.source_topics + names, names)
        missing = missing_topic_acls(settings, metadata)
        if missing:
            raise KafkaAccessDenied(missing)
        observed = {
            name: ObservedTopic(name, topic.partitions, topic.replication_factor, {})
            for name, topic in metadata.topics.items()
            if name in names and topic.error_code == 0
        }
        allowed = {n for n, t in metadata.topics.items() if Operation.DESCRIBE_CONFIGS in t.operations}
        unreadable = [n for n in observed if n not in allowed]
        if unreadable:
            acls = [a for a in required_acls(settings) if a.operation is Operation.DESCRIBE_CONFIGS]
            log.warning(
                "kafka.topics.unchecked",
                topics=unreadable,
                missing=[str(a) for a in acls if a.name in unreadable],
                hint="grant DescribeConfigs on the internal topics so their configs are checked at start",
            )
        configs = await _configs(admin, sorted(allowed & set(observed)))
        for name, values in configs.items():
            observed[name] = ObservedTopic(name, observed[name].partitions, observed[name].replication_factor, values)
        report(check_topics(settings, observed))
    finally:
        await admin.close()


async def _visible_metadata(
    admin: AIOKafkaAdminClient, topics: list[str], created: list[str], wait_seconds: float = 10.0
) -> ClusterMetadata:
    """The metadata of `topics`, once the broker answering shows every topic of `created` (one created
    a moment ago may not be in its metadata cache yet)."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        metadata = await authorized_metadata(admin, topics)
        pending = [n for n in created if n in metadata.topics and metadata.topics[n].error_code == UNKNOWN_TOPIC]
        if not pending or asyncio.get_running_loop().time() > deadline:
            return metadata
        await asyncio.sleep(0.1)


def report(problems: list[TopicProblem]) -> None:
    """Log every problem; raise a ConfigError listing the errors, if any."""
    for p in problems:
        event = "kafka.topic.misconfigured"
        (log.error if p.severity is Severity.ERROR else log.warning)(event, topic=p.topic, problem=p.problem, fix=p.fix)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        raise ConfigError(
            "the internal topics differ from what the service needs:\n" + "\n".join(f"  {p}" for p in errors)
        )


async def _create_missing(settings: Settings, admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    existing = set(await admin.list_topics())
    missing = [t for t in topics if t.name not in existing]
    if not missing:
        return
    response: Any = await admin.create_topics(missing)
    denied, created = [], []
    for name, error_code, *rest in response.topic_errors:
        if error_code == TOPIC_NOT_AUTHORIZED:
            denied.append(name)
        elif error_code == 0:
            created.append(name)
        elif error_code != TOPIC_ALREADY_EXISTS:  # created meanwhile by another replica
            message = rest[0] if rest else ""
            raise ConfigError(f"creating topic {name} failed (Kafka error {error_code}): {message}")
    if denied:
        acls = required_acls(settings)
        raise KafkaAccessDenied(
            [a for a in acls if a.operation is Operation.CREATE and a.name in denied],
            "the topics are missing and the service may not create them: create them yourself or grant Create",
        )
    if created:
        log.info("kafka.topics.created", topics=created)


async def _configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    if not topics:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, t, dict.fromkeys(CHECKED_CONFIGS)) for t in topics]
    responses: list[Any] = await admin.describe_configs(resources)
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            if error_code == 0:
                found[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return found


async def read_whole_topic(consumer: AIOKafkaConsumer, settings: Settings, topic: str) -> dict[TopicPartition, int]:
    """Assigns every partition of `topic` to `consumer` from its first record (a compacted topic read as a
    table); returns each partition's end offset now, the point from which the table is loaded."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    end: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    return end


async def partitions_of(settings: Settings, topic: str, wait_seconds: float = 30.0) -> list[int]:
    """The topic's partition numbers; waits while a topic created a moment ago becomes visible."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            [description] = await admin.describe_topics([topic])
            partitions = description.get("partitions") or []
            if not description.get("error_code") and partitions and all(p["leader"] >= 0 for p in partitions):
                return sorted(p["partition"] for p in partitions)
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError(f"topic {topic} is not available")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
