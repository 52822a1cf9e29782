"""What the service may do on the Kafka cluster: the ACLs it needs, a check of them at start, and a
message naming the missing ACL when the broker refuses a request.

With an authorizer a missing ACL makes a client fail in ways that name a resource but not the
operation (or, for a topic the client cannot describe, that look like a missing topic). The check
asks the broker what this principal may do on each topic (Metadata v8, KIP-430) and names every
missing (operation, resource) pair at once; the consumer groups and the transactional id are checked
by the clients' own first requests, whose refusals `denied` turns into the same kind of message.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from service.errors import ConfigError
from service.kafka_protocol import ClusterMetadata, Operation, PatternType, ResourceType
from service.settings import Settings

UNKNOWN_TOPIC = 3
TOPIC_NOT_AUTHORIZED = 29


@dataclass(frozen=True)
class Acl:
    """One ALLOW ACL for the service's principal, from any host."""

    resource: ResourceType
    name: str
    operation: Operation
    why: str
    pattern: PatternType = PatternType.LITERAL

    def __str__(self) -> str:
        kind = self.resource.name.lower().replace("_", " ")
        prefixed = " (prefixed)" if self.pattern is PatternType.PREFIXED else ""
        return f"{self.operation.title} on {kind} {self.name}{prefixed}"


class KafkaAccessDenied(ConfigError):
    """The broker refuses the service something it needs: the message names the missing ACLs."""

    def __init__(self, missing: list[Acl], detail: str = "") -> None:
        self.missing = missing
        lines = [f"  {acl}: {acl.why}" for acl in missing]
        super().__init__(
            "the Kafka principal lacks "
            + ("an ACL" if len(missing) == 1 else f"{len(missing)} ACLs")
            + ":\n"
            + "\n".join(lines)
            + (f"\n  ({detail})" if detail else "")
            + "\nGrant them (docs/kafka-production.md lists every ACL the service needs) and start again."
        )


def transactional_id_prefix(settings: Settings) -> str:
    return f"{settings.group_id}.rekey-"


def required_acls(settings: Settings) -> list[Acl]:
    """Every ACL the service needs, and nothing more (the secured-broker tests remove each in turn).

    Describe on topics and groups is implied by Read / Write; IdempotentWrite on the cluster is not
    needed (since Kafka 3.0 an idempotent producer with Write on a topic may start)."""
    s = settings
    acls = [
        Acl(ResourceType.TOPIC, s.events_topic, Operation.READ, "stage 1 reads the plugin's user events"),
        Acl(ResourceType.TOPIC, s.admin_events_topic, Operation.READ, "stage 1 reads the plugin's admin events"),
    ]
    internal = {
        s.changes_topic: "stage 1, backfill and links write changes; stage 2 reads them",
        s.user_state_topic: "stage 2 writes each user's state and restores it on assignment",
        s.tenants_topic: "the tenant store writes tenant records; every replica and stage 1 (names only) read them",
        s.dead_letter_topic: "records that cannot be applied are written there and listed by the API",
        s.parking_topic: "changes set aside are written there and read back by replays",
        s.replay_cursors_topic: "replays write and read how far each tenant was replayed",
    }
    if s.activity_enabled:
        internal[s.activity_topic] = "every replica writes what it did for each downstream and reads all of it back"
    for topic, why in internal.items():
        acls += [
            Acl(ResourceType.TOPIC, topic, Operation.READ, why),
            Acl(ResourceType.TOPIC, topic, Operation.WRITE, why),
            Acl(ResourceType.TOPIC, topic, Operation.CREATE, "the service creates its topics when they are missing"),
            Acl(
                ResourceType.TOPIC,
                topic,
                Operation.DESCRIBE_CONFIGS,
                "the start-up check reads the topic's configs (without it the check is skipped, with a warning)",
            ),
        ]
    acls += [
        Acl(ResourceType.GROUP, f"{s.group_id}.rekey", Operation.READ, "stage 1's consumer group"),
        Acl(ResourceType.GROUP, f"{s.group_id}.apply", Operation.READ, "stage 2's consumer group"),
        Acl(
            ResourceType.TRANSACTIONAL_ID,
            transactional_id_prefix(s),
            Operation.WRITE,
            "stage 1 publishes in transactions, one transactional id per instance",
            PatternType.PREFIXED,
        ),
    ]
    return acls


def missing_topic_acls(settings: Settings, metadata: ClusterMetadata) -> list[Acl]:
    """The topic ACLs the broker says this principal lacks, for topics that exist (Create is checked by
    creating; DescribeConfigs by describing, which only warns)."""
    missing = []
    for acl in required_acls(settings):
        if acl.resource is not ResourceType.TOPIC or acl.operation in (Operation.CREATE, Operation.DESCRIBE_CONFIGS):
            continue
        topic = metadata.topics.get(acl.name)
        if topic is None or topic.error_code == UNKNOWN_TOPIC:
            continue
        if topic.error_code == TOPIC_NOT_AUTHORIZED or acl.operation not in topic.operations:
            missing.append(acl)
    return missing


def denied(settings: Settings, exc: KafkaError, operation: Operation | None = None) -> KafkaAccessDenied | None:
    """A client's authorization error as the ACLs it lacks; None for any other error."""
    acls = required_acls(settings)
    if isinstance(exc, GroupAuthorizationFailedError):
        wanted = [a for a in acls if a.resource is ResourceType.GROUP and a.name in str(exc)]
    elif isinstance(exc, TransactionalIdAuthorizationFailed):
        wanted = [a for a in acls if a.resource is ResourceType.TRANSACTIONAL_ID]
    elif isinstance(exc, TopicAuthorizationFailedError):
        wanted = [
            a
            for a in acls
            if a.resource is ResourceType.TOPIC
            and a.name in str(exc)
            and (a.operation is operation if operation else a.operation in (Operation.READ, Operation.WRITE))
        ]
    else:
        return None
    return KafkaAccessDenied(wanted, f"the broker answered {type(exc).__name__}: {str(exc)[:200]}")
