"""Where a change comes from, and how new it is (users and groups alike)."""

from __future__ import annotations

from enum import StrEnum


class ChangeSource(StrEnum):
    """Where a change comes from. Only events can be stale or partial: the others were read from
    Keycloak (or declared by an operator) and are never re-read."""

    EVENT = "event"  # a Keycloak event through the plugin
    BACKFILL = "backfill"
    RECONCILE = "reconcile"
    ON_DEMAND = "on_demand"
    OPERATOR = "operator"  # an operator's link


Version = tuple[int, str]  # (event time in ms, tie tag: the event id, "" when the plugin sends none)
NO_VERSION: Version = (-1, "")
