"""The start-up check of the internal topics (pure): what refuses the start, what only warns."""

from __future__ import annotations

from typing import TypedDict, Unpack

import pytest

from service.kafka_topics import ObservedTopic, Severity, check_topics
from service.settings import Settings

SETTINGS = Settings(token_key="x", admin_token="y", internal_replication_factor=3)  # type: ignore[arg-type]
GOOD = {"min.insync.replicas": "2", "retention.ms": "604800000"}


def healthy() -> dict[str, ObservedTopic]:
    s = SETTINGS
    compacted = {**GOOD, "cleanup.policy": "compact"}
    deleted = {**GOOD, "cleanup.policy": "delete"}
    topics = [
        ObservedTopic(s.changes_topic, 6, 3, deleted),
        ObservedTopic(s.user_state_topic, 6, 3, compacted),
        ObservedTopic(s.tenants_topic, 1, 3, compacted),
        ObservedTopic(s.dead_letter_topic, 1, 3, deleted),
        ObservedTopic(s.parking_topic, 6, 3, deleted),
        ObservedTopic(s.replay_cursors_topic, 1, 3, compacted),
    ]
    return {t.name: t for t in topics}


class TopicChanges(TypedDict, total=False):
    """What a test changes of one healthy topic; `configs` are merged into its configs."""

    partitions: int
    rf: int
    configs: dict[str, str]


def with_topic(name: str, **changes: Unpack[TopicChanges]) -> dict[str, ObservedTopic]:
    topics = healthy()
    old = topics[name]
    configs = {**old.configs, **changes.get("configs", {})}
    topics[name] = ObservedTopic(
        name, changes.get("partitions", old.partitions), changes.get("rf", old.replication_factor), configs
    )
    return topics


def test_topics_as_created_for_production_pass() -> None:
    """6 co-partitioned partitions, replication 3, min.insync.replicas 2, compaction where needed -> nothing."""
    assert check_topics(SETTINGS, healthy()) == []


@pytest.mark.parametrize(
    ("topic", "changes", "words"),
    [
        ("user_state_topic", {"partitions": 3}, "co-partitioned"),
        ("changes_topic", {"partitions": 12}, "co-partitioned"),
        ("user_state_topic", {"configs": {"cleanup.policy": "delete"}}, "cleanup.policy=delete"),
        ("user_state_topic", {"configs": {"cleanup.policy": "compact,delete"}}, "cleanup.policy=compact,delete"),
        ("tenants_topic", {"configs": {"cleanup.policy": "delete"}}, "cleanup.policy=delete"),
        ("changes_topic", {"configs": {"cleanup.policy": "compact"}}, "compaction drops"),
        ("parking_topic", {"configs": {"cleanup.policy": "compact"}}, "compaction drops"),
        ("tenants_topic", {"configs": {"min.insync.replicas": "4"}}, "no write can succeed"),
    ],
)
def test_what_breaks_correctness_is_an_error(topic: str, changes: TopicChanges, words: str) -> None:
    """Co-partitioning, compaction of the state topics, no compaction of the change topics, writable at all."""
    problems = check_topics(SETTINGS, with_topic(getattr(SETTINGS, topic), **changes))
    errors = [p for p in problems if p.severity is Severity.ERROR]
    assert len(errors) == 1 and words in errors[0].problem, problems
    assert errors[0].fix


@pytest.mark.parametrize(
    ("topic", "changes", "words"),
    [
        ("replay_cursors_topic", {"configs": {"cleanup.policy": "delete"}}, "cleanup.policy=delete"),
        ("dead_letter_topic", {"configs": {"cleanup.policy": "compact"}}, "compaction drops"),
        ("changes_topic", {"configs": {"min.insync.replicas": "3"}}, "one broker down"),
        ("changes_topic", {"configs": {"min.insync.replicas": "1"}}, "may be lost"),
        ("tenants_topic", {"rf": 2}, "replication factor 2"),
        ("parking_topic", {"configs": {"retention.ms": "3600000"}}, "retention.ms=3600000"),
        ("dead_letter_topic", {"configs": {"retention.ms": "86400000"}}, "retention.ms=86400000"),
        ("changes_topic", {"configs": {"retention.ms": "60000"}}, "retention.ms=60000"),
    ],
)
def test_risks_are_warnings(topic: str, changes: TopicChanges, words: str) -> None:
    """What works but may lose or stall records only warns, naming the setting and the fix."""
    problems = check_topics(SETTINGS, with_topic(getattr(SETTINGS, topic), **changes))
    assert problems and all(p.severity is Severity.WARNING for p in problems), problems
    assert any(words in p.problem for p in problems), problems


def test_unlimited_retention_and_unread_configs_pass() -> None:
    """retention.ms=-1 keeps everything; a topic whose configs could not be read is checked on partitions only."""
    topics = with_topic(SETTINGS.parking_topic, configs={"retention.ms": "-1"})
    topics[SETTINGS.tenants_topic] = ObservedTopic(SETTINGS.tenants_topic, 1, 3, {})
    assert check_topics(SETTINGS, topics) == []
