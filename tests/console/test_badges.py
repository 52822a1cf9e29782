"""The status badges of a downstream, decided from its tenant view, its activity summary and what it parked."""

from __future__ import annotations

from typing import Any

import pytest

from service.api.models import AuthView, TenantView
from service.console.badges import badges, drift_count
from service.domain.activity import ActivitySummary
from service.domain.groups import GroupDisplay
from service.domain.plan import DeletePolicy


def view(**changes: Any) -> TenantView:
    values: dict[str, Any] = {
        "realm": "acme",
        "status": "enabled",
        "base_url": "https://scim.example/v2",
        "delete_policy": DeletePolicy.IGNORE,
        "max_concurrency": None,
        "rate_limit_per_minute": None,
        "realm_id": None,
        "reconcile_interval_minutes": None,
        "updated_at": "2026-12-01T00:00:00+00:00",
        "notices": [],
        "circuit": "closed",
        "lookups": "filter",
        "groups": False,
        "group_display": GroupDisplay.NAME,
        "group_flatten": False,
        "group_paths": [],
        "group_pattern": None,
        "group_members_per_request": 100,
        "bulk": "auto",
        "auth": AuthView(type="bearer"),
        "preset": None,
        "user_lookup": "externalId",
    }
    return TenantView(**{**values, **changes})


@pytest.mark.parametrize(
    ("tenant", "summary", "parked", "expected"),
    [
        (view(), None, 0, ["enabled"]),
        (view(), ActivitySummary(), 0, ["enabled"]),
        (None, None, 0, ["disabled"]),
        (None, None, 2, ["disabled", "parked"]),
        (view(status="unauthorized"), None, 3, ["unauthorized", "parked"]),
        (view(circuit="open"), None, 0, ["enabled", "circuit_open"]),
        (view(), ActivitySummary(circuit="open"), 0, ["enabled", "circuit_open"]),  # another replica's breaker
        (view(circuit="half_open"), ActivitySummary(circuit="closed"), 0, ["enabled", "circuit_open"]),
        (view(), ActivitySummary(circuit="closed"), 0, ["enabled"]),
        (
            view(),
            ActivitySummary(drift={"missing": {"count": 2}, "stale": {"count": 1}, "extra": 0}),
            0,
            ["enabled", "drift"],
        ),
        (view(), ActivitySummary(drift={"missing": 0, "stale": 0, "extra": 0, "time": 1.0}), 0, ["enabled"]),
        (view(), ActivitySummary(drift={"outcome": "clean", "missing": 4}), 0, ["enabled"]),
        (view(), ActivitySummary(drift={"outcome": "drift"}), 0, ["enabled", "drift"]),
        (
            view(status="unauthorized", circuit="open"),
            ActivitySummary(drift={"missing": 1}),
            5,
            ["unauthorized", "circuit_open", "parked", "drift"],
        ),
    ],
)
def test_badges_are_decided_from_the_view_the_activity_and_the_parked_count(
    tenant: TenantView | None, summary: ActivitySummary | None, parked: int, expected: list[str]
) -> None:
    """One state badge (enabled, disabled or unauthorized) first, then what needs attention, in order."""
    assert [b.code for b in badges(tenant, summary, parked)] == expected


def test_each_badge_reads_what_it_counts() -> None:
    """The parked badge carries the count, the drift badge the number of differing users; each has a detail."""
    found = badges(view(), ActivitySummary(drift={"missing": 2, "stale": {"count": 3}}), 7)
    assert [b.label for b in found] == ["enabled", "7 parked", "drift: 5"]
    assert all(b.detail for b in found)
    assert [b.tone for b in found] == ["good", "warn", "warn"]


def test_a_drift_summary_counts_only_what_it_holds() -> None:
    """Counts as numbers or {count: n}; booleans and text are not counts."""
    assert drift_count({"missing": True, "stale": "3", "extra": {"count": 2}}) == 2
    assert drift_count({}) == 0
