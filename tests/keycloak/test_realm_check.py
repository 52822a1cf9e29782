"""The enable-time check of a realm's event settings, against events-config documents recorded from
Keycloak 26.5.6 (tests/keycloak/recorded/events-config-*.json) and variants of them, and against the
errors a settings read can end in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from service.keycloak_admin.errors import (
    KeycloakError,
    KeycloakNotFound,
    KeycloakUnauthorized,
    KeycloakUnavailable,
)
from service.keycloak_admin.realm_check import WarningCode, check_realm, events_config_warnings

RECORDED = Path(__file__).parent / "recorded"
LISTENERS = ("kafka", "playa-kafka-event-listener")  # the setting's default


def recorded(name: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RECORDED / name).read_text())
    doc.update(changes)
    return doc


DEFAULT = recorded("events-config-default.json")  # a fresh realm: jboss-logging only, every switch off
DETAILS_ON = recorded("events-config-details-on.json")  # events, admin events and details on


def codes(config: dict[str, Any], listeners: tuple[str, ...] = LISTENERS) -> list[WarningCode]:
    return [w.code for w in events_config_warnings(config, listeners)]


def test_a_fresh_realm_lacks_the_listener_and_the_representation() -> None:
    """Keycloak's defaults: only jboss-logging listens and "Include representation" is off."""
    assert codes(DEFAULT) == [WarningCode.LISTENER_MISSING, WarningCode.REPRESENTATION_OFF]


def test_a_realm_set_up_for_the_service_has_no_warning() -> None:
    """One configured listener listed and the representation included: nothing to say."""
    assert codes({**DETAILS_ON, "eventsListeners": ["jboss-logging", "kafka"]}) == []
    assert codes({**DETAILS_ON, "eventsListeners": ["playa-kafka-event-listener"]}) == []


def test_the_listener_alone_leaves_the_representation_warning() -> None:
    """Listener listed, details off: representation_off only."""
    assert codes({**DEFAULT, "eventsListeners": ["jboss-logging", "kafka"]}) == [WarningCode.REPRESENTATION_OFF]


def test_the_event_store_switches_do_not_matter() -> None:
    """eventsEnabled / adminEventsEnabled only switch Keycloak's own store: listeners get events anyway."""
    config = {**DETAILS_ON, "eventsListeners": ["kafka"], "eventsEnabled": False, "adminEventsEnabled": False}
    assert codes(config) == []


def test_only_the_configured_listener_ids_count() -> None:
    """A realm listing `kafka` lacks the listener when the service is told another id is the one."""
    config = {**DETAILS_ON, "eventsListeners": ["kafka"]}
    assert codes(config, ("outbound-scim-test-kafka",)) == [WarningCode.LISTENER_MISSING]
    [warning] = events_config_warnings(config, ("outbound-scim-test-kafka",))
    assert "outbound-scim-test-kafka" in warning.detail and "Event listeners" in warning.detail


def test_a_config_without_the_keys_warns_about_both() -> None:
    """Missing or odd keys (another Keycloak version) are read as "not set", never as an error."""
    assert codes({}) == [WarningCode.LISTENER_MISSING, WarningCode.REPRESENTATION_OFF]
    assert codes({"eventsListeners": "kafka", "adminEventsDetailsEnabled": "true"}) == [
        WarningCode.LISTENER_MISSING,
        WarningCode.REPRESENTATION_OFF,
    ]


def test_the_answer_shape() -> None:
    """Each warning is {"code", "detail"}; the representation warning names the switch and the consequence."""
    warning = events_config_warnings({**DEFAULT, "eventsListeners": ["kafka"]}, LISTENERS)[0]
    assert set(warning.public()) == {"code", "detail"}
    assert warning.public()["code"] == "representation_off"
    assert "Include representation" in warning.detail and "re-reads" in warning.detail
    assert "no_representation" in warning.detail


class ScriptedKeycloak:
    """events_config answers with a document, raises an error, or never answers."""

    def __init__(self, answer: dict[str, Any] | Exception | None) -> None:
        self.answer = answer

    async def events_config(self, realm: str) -> dict[str, Any]:
        if self.answer is None:
            await asyncio.Event().wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        assert self.answer is not None
        return self.answer


async def test_check_realm_reads_the_settings() -> None:
    """A readable config gives its warnings."""
    warnings = await check_realm(ScriptedKeycloak(DEFAULT), "acme", LISTENERS)
    assert [w.code for w in warnings] == [WarningCode.LISTENER_MISSING, WarningCode.REPRESENTATION_OFF]


PATH = "admin/realms/acme/events/config"


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (KeycloakUnauthorized(403, "GET", PATH, "HTTP 403 Forbidden"), "view-events"),
        (KeycloakUnauthorized(401, "POST", "realms/master/protocol/openid-connect/token"), "OUTBOUND_SCIM_KEYCLOAK_"),
        (KeycloakNotFound(404, "GET", PATH, "Realm not found."), "no such realm"),
        (KeycloakUnavailable(503, "GET", PATH), "503"),
        (KeycloakError(200, "GET", PATH, "response is not an object"), "not an object"),
    ],
)
async def test_an_unreadable_config_is_a_warning_not_an_error(error: KeycloakError, hint: str) -> None:
    """403 asks for view-events; other failures say what failed; none raises (the enable goes on)."""
    [warning] = await check_realm(ScriptedKeycloak(error), "acme", LISTENERS)
    assert warning.code is WarningCode.EVENTS_CONFIG_UNREADABLE
    assert hint in warning.detail


async def test_a_keycloak_that_does_not_answer_is_waited_for_briefly() -> None:
    """The enable waits at most the check's timeout, then warns."""
    [warning] = await check_realm(ScriptedKeycloak(None), "acme", LISTENERS, timeout_seconds=0.05)
    assert warning.code is WarningCode.EVENTS_CONFIG_UNREADABLE
    assert "did not answer" in warning.detail
