"""Records set aside (dead-lettered or parked): the original key, value and headers, plus Kafka Connect
style context headers saying where the record came from and why it failed, and where a replay sends it.
An oversized record keeps an empty value (a null key and a null value cannot be produced)."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord

REASON = "outbound_scim.reason"
TENANT = "outbound_scim.tenant"
REPLAY_TO = "outbound_scim.replay_to"
REPLAYED = "outbound_scim.replay"
ORIGINAL_SIZE = "outbound_scim.original_size"
DOWNSTREAM_ID = "outbound_scim.downstream_id"  # conflicts: the account that blocked the create ...
OWNER = "outbound_scim.owner"  # ... and the externalId that owns it


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(
    record: ConsumerRecord[bytes, bytes],
    reason: str,
    exc: BaseException,
    *,
    tenant: str | None = None,
    keep_value: bool = True,
    headers: dict[str, str] | None = None,
) -> DeadLetter:
    """Keep the record as it was, and say where it came from and why it failed. `keep_value=False`
    (oversized records) keeps only the coordinates: the original stays readable in its source topic."""
    context = {
        "__connect.errors.topic": record.topic,
        "__connect.errors.partition": str(record.partition),
        "__connect.errors.offset": str(record.offset),
        "__connect.errors.exception.class.name": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "__connect.errors.exception.message": str(exc)[:1000],
        REASON: reason,
        REPLAY_TO: record.topic,
    }
    if tenant is not None:
        context[TENANT] = tenant
    context.update(headers or {})
    if not keep_value:
        context[ORIGINAL_SIZE] = str(len(record.value or b""))
    inherited = [(k, v) for k, v in (record.headers or ()) if not k.startswith(("__connect.errors.", "outbound_scim."))]
    own = [(k, v.encode()) for k, v in context.items()]
    return DeadLetter(record.key, record.value if keep_value else b"", inherited + own)
