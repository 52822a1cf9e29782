"""What in a realm's event settings keeps its changes from reaching the service, as warnings for the
operator who enables the tenant.

Keycloak hands every user and admin event of a realm to each event listener whose id the realm lists in
`eventsListeners` (or whose factory is global); `eventsEnabled` and `adminEventsEnabled` only switch
Keycloak's own event store, so they are not checked. `adminEventsDetailsEnabled` ("Include
representation") reaches each listener as `includeRepresentation`: SnuK87's listener ignores it, one
that honours it sends admin events without the user.

Warnings never block an enable: the realm may be set up after it, and a global listener cannot be seen
from here. Reading the settings needs the realm-management role `view-events`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from service.keycloak_admin.errors import KeycloakError, KeycloakNotFound, KeycloakUnauthorized

__all__ = ["RealmWarning", "WarningCode", "check_realm", "events_config_warnings"]

CHECK_TIMEOUT_SECONDS = 10.0  # an enable waits no longer than this for Keycloak (its retries included)


class EventsConfigReader(Protocol):
    """Reads a realm's event settings; KeycloakAdminClient.events_config does."""

    async def events_config(self, realm: str) -> dict[str, Any]: ...


class WarningCode(StrEnum):
    LISTENER_MISSING = "listener_missing"
    REPRESENTATION_OFF = "representation_off"
    EVENTS_CONFIG_UNREADABLE = "events_config_unreadable"


@dataclass(frozen=True, slots=True)
class RealmWarning:
    code: WarningCode
    detail: str  # what to switch on, and where

    def public(self) -> dict[str, str]:
        return {"code": self.code.value, "detail": self.detail}


def events_config_warnings(config: Mapping[str, Any], listeners: Collection[str]) -> list[RealmWarning]:
    """The warnings for one realm's events config (GET /admin/realms/{realm}/events/config). Pure."""
    warnings = []
    listed = config.get("eventsListeners")
    listed = set(listed) if isinstance(listed, list) else set()
    if not listed & set(listeners):
        warnings.append(
            RealmWarning(
                WarningCode.LISTENER_MISSING,
                f"none of the event listeners {', '.join(sorted(listeners))} is enabled in this realm, so none of "
                "its events reach the service: add yours under Realm settings -> Events -> Event listeners "
                "(or set OUTBOUND_SCIM_KEYCLOAK_EVENT_LISTENERS to the id of the listener you use)",
            )
        )
    if config.get("adminEventsDetailsEnabled") is not True:
        warnings.append(
            RealmWarning(
                WarningCode.REPRESENTATION_OFF,
                "'Include representation' is off: a listener that honours it sends admin events without the "
                "user (SnuK87's listener sends it anyway); with Keycloak access configured the service re-reads "
                "those users, without it they are counted as no_representation and not applied. Turn on "
                "Realm settings -> Events -> Admin events settings -> Include representation",
            )
        )
    return warnings


async def check_realm(
    keycloak: EventsConfigReader,
    realm: str,
    listeners: Collection[str],
    timeout_seconds: float = CHECK_TIMEOUT_SECONDS,
) -> list[RealmWarning]:
    """Read the realm's event settings and warn about them; a settings read that fails is a warning too
    (never an error: the enable goes on)."""
    try:
        async with asyncio.timeout(timeout_seconds):
            config = await keycloak.events_config(realm)
    except TimeoutError:
        return [_unreadable(f"Keycloak did not answer within {timeout_seconds:g} s; enable again to re-check")]
    except KeycloakUnauthorized as exc:
        if exc.status == 403:
            return [
                _unreadable(
                    "Keycloak refused to show the realm's event settings (403): grant the service "
                    "account the realm-management role view-events to let enable check them"
                )
            ]
        return [
            _unreadable(
                f"Keycloak refused the service's credentials ({exc.status}): check the "
                "OUTBOUND_SCIM_KEYCLOAK_* settings"
            )
        ]
    except KeycloakNotFound:
        return [_unreadable("Keycloak has no such realm (404): check the realm name and OUTBOUND_SCIM_KEYCLOAK_URL")]
    except KeycloakError as exc:
        return [_unreadable(f"reading the realm's event settings failed: {exc}")]
    return events_config_warnings(config, listeners)


def _unreadable(detail: str) -> RealmWarning:
    return RealmWarning(WarningCode.EVENTS_CONFIG_UNREADABLE, detail)
