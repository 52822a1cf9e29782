"""Dead-letter records: the original key, value and headers, plus Kafka Connect style context headers."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(record: ConsumerRecord[bytes, bytes], reason: str, exc: BaseException) -> DeadLetter:
    """Keep the record as it was, and say where it came from and why it failed."""
    context = {
        "__connect.errors.topic": record.topic,
        "__connect.errors.partition": str(record.partition),
        "__connect.errors.offset": str(record.offset),
        "__connect.errors.exception.class.name": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "__connect.errors.exception.message": str(exc)[:1000],
        "outbound_scim.reason": reason,
    }
    headers = list(record.headers or ()) + [(k, v.encode()) for k, v in context.items()]
    return DeadLetter(record.key, record.value, headers)
