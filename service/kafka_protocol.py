"""The Kafka requests aiokafka does not offer: Metadata v8 (which reports what the client may do on each
topic and on the cluster, KIP-430) for the start-up checks, LeaveGroup v3 (a static member leaving on a
graceful stop), and ACL creation for the tests' broker. Kept apart so the rest of the service sees plain
dataclasses, not protocol structs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import CreateAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String


class Operation(IntEnum):
    """Kafka's AclOperation codes (org.apache.kafka.common.acl.AclOperation)."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    IDEMPOTENT_WRITE = 12

    @property
    def title(self) -> str:
        """As Kafka's tools and docs write it: Read, DescribeConfigs, IdempotentWrite."""
        return "".join(word.capitalize() for word in self.name.split("_"))


class ResourceType(IntEnum):
    """Kafka's ResourceType codes."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


def operations_of(bits: int) -> frozenset[Operation]:
    """The operations set in a KIP-430 authorized-operations bit field (INT32_MIN: not reported)."""
    if bits < 0:
        return frozenset()
    return frozenset(op for op in Operation if bits & (1 << op))


class _MetadataResponseV8(Response):
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
        ("authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _AuthorizedMetadataRequest(Request[_MetadataRequestV8]):
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, True, True)


@dataclass(frozen=True)
class TopicMetadata:
    name: str
    error_code: int  # 0, 3 (unknown topic) or 29 (not authorized to describe it)
    partitions: int
    replication_factor: int
    operations: frozenset[Operation]


@dataclass(frozen=True)
class ClusterMetadata:
    topics: dict[str, TopicMetadata]
    operations: frozenset[Operation]  # on the cluster resource


async def authorized_metadata(admin: AIOKafkaAdminClient, topics: list[str]) -> ClusterMetadata:
    """Partitions, replication and the caller's authorized operations of `topics` (no auto-creation)."""
    response: Any = await admin._send_request(_AuthorizedMetadataRequest(topics))
    found = {}
    for error_code, name, _internal, partitions, bits in response.topics:
        replicas = max((len(p[4]) for p in partitions), default=0)
        found[name] = TopicMetadata(name, error_code, len(partitions), replicas, operations_of(bits))
    return ClusterMetadata(found, operations_of(response.authorized_operations))


async def create_acl(
    admin: AIOKafkaAdminClient,
    principal: str,
    resource: ResourceType,
    name: str,
    operation: Operation,
    pattern: PatternType = PatternType.LITERAL,
) -> None:
    """Allow `principal` `operation` on a resource from any host (for the tests' broker and for operators' scripts)."""
    allow = 3
    request = CreateAclsRequest(resource, name, pattern, principal, "*", operation, allow)
    response: Any = await admin._send_request(request)
    for error_code, error_message in response.creation_responses:
        if error_code:
            raise RuntimeError(f"creating the ACL failed ({error_code}): {error_message}")


class _LeaveGroupResponseV3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16)),
        ),
    )


class _LeaveGroupRequestV3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class _StaticLeaveRequest(Request[_LeaveGroupRequestV3]):
    API_KEY = 13

    def __init__(self, group_id: str, member_id: str, instance_id: str) -> None:
        self._args = (group_id, [(member_id, instance_id)])

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> _LeaveGroupRequestV3:
        return request_struct_class(*self._args)


async def leave_static_group(consumer: AIOKafkaConsumer) -> bool:
    """Make a static member leave its group now (aiokafka never sends LeaveGroup for one): on a graceful
    stop its partitions go to the other replicas at once instead of after the session timeout.
    Best effort, like aiokafka's own leave: False when it could not be sent."""
    coordinator: Any = getattr(consumer, "_coordinator", None)
    instance_id = getattr(coordinator, "_group_instance_id", None)
    if coordinator is None or instance_id is None or not coordinator.member_id or coordinator.coordinator_id is None:
        return False
    request = _StaticLeaveRequest(coordinator.group_id, coordinator.member_id, instance_id)
    try:
        response: Any = await coordinator._send_req(request)
    except KafkaError:
        return False
    return bool(response.error_code == 0)
