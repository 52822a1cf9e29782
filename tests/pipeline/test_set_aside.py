"""dead_letter: the original record kept as it was, plus Kafka Connect style context headers."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from service.errors import PoisonRecord
from service.pipeline.set_aside import set_aside


def record(headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="keycloak-events",
        partition=2,
        offset=41,
        timestamp=1764680000123,
        timestamp_type=0,
        key=None,
        value=b"not json",
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=8,
        headers=headers or [],
    )


def test_dead_letter_keeps_key_value_and_headers() -> None:
    """Key, value and original headers are kept byte for byte, original headers first."""
    letter = set_aside(record([("trace", b"abc")]), "malformed_json", PoisonRecord("malformed_json", "x"))
    assert letter.key is None
    assert letter.value == b"not json"
    assert letter.headers[0] == ("trace", b"abc")


def test_dead_letter_adds_context_headers() -> None:
    """Topic, partition, offset, exception class and message and our reason are added as headers."""
    letter = set_aside(record(), "malformed_json", PoisonRecord("malformed_json", "Expecting value"))
    assert dict(letter.headers) == {
        "__connect.errors.topic": b"keycloak-events",
        "__connect.errors.partition": b"2",
        "__connect.errors.offset": b"41",
        "__connect.errors.exception.class.name": b"service.errors.PoisonRecord",
        "__connect.errors.exception.message": b"malformed_json: Expecting value",
        "outbound_scim.reason": b"malformed_json",
        "outbound_scim.replay_to": b"keycloak-events",
    }


def test_dead_letter_of_an_oversized_record_keeps_only_coordinates() -> None:
    """keep_value=False drops the value (it would not fit the topic) and records its size."""
    letter = set_aside(record(), "record_too_large", PoisonRecord("record_too_large"), keep_value=False)
    assert letter.value == b""
    assert dict(letter.headers)["outbound_scim.original_size"] == b"8"


def test_dead_letter_names_the_tenant_and_replaces_old_context() -> None:
    """A tenant header is added; context headers of an earlier dead-lettering are not duplicated."""
    old = [("__connect.errors.topic", b"older"), ("outbound_scim.reason", b"older")]
    letter = set_aside(record(old), "rejected", RuntimeError("400"), tenant="acme")
    headers = dict(letter.headers)
    assert headers["outbound_scim.tenant"] == b"acme"
    assert [k for k, _ in letter.headers].count("__connect.errors.topic") == 1
    assert headers["__connect.errors.topic"] == b"keycloak-events"


def test_dead_letter_message_is_bounded() -> None:
    """A huge exception message is cut to 1000 characters."""
    letter = set_aside(record(), "internal_error", RuntimeError("x" * 5000))
    assert len(dict(letter.headers)["__connect.errors.exception.message"]) == 1000
