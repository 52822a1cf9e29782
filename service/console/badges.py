"""The status badges of a downstream, decided from what the tenant service and the activity log say.

Pure: a TenantView (None when the downstream is not enabled), the activity summary (None when the activity
log is off) and the number of parked changes in, the badges out, most important first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from service.api.models import TenantView
from service.domain.activity import ActivitySummary

__all__ = ["Badge", "badges", "drift_count"]

Tone = Literal["good", "bad", "warn", "off"]


@dataclass(frozen=True, slots=True)
class Badge:
    code: str  # enabled, disabled, unauthorized, circuit_open, parked, drift
    label: str  # what the badge reads
    tone: Tone  # its colour
    detail: str  # its tooltip: what it means and what to do


def badges(view: TenantView | None, summary: ActivitySummary | None, parked: int) -> list[Badge]:
    if view is None:
        found = [Badge("disabled", "disabled", "off", "outbound SCIM is off for it: its events are skipped")]
    elif view.status == "unauthorized":
        found = [
            Badge("unauthorized", "unauthorized", "bad", "the downstream refused the token: rotate it (enable again)")
        ]
    else:
        found = [Badge("enabled", "enabled", "good", "changes are sent to the downstream")]
    circuit = _circuit(view, summary)
    if circuit is not None:
        found.append(circuit)
    if parked > 0:
        changes = "change" if parked == 1 else "changes"
        found.append(
            Badge("parked", f"{parked} parked", "warn", f"{parked} {changes} set aside: fix the cause, then replay")
        )
    drifted = drift_count(summary.drift) if summary is not None and summary.drift is not None else 0
    if drifted > 0:
        found.append(
            Badge("drift", f"drift: {drifted}", "warn", "the last reconciliation found users that differ: fix them")
        )
    return found


def _circuit(view: TenantView | None, summary: ActivitySummary | None) -> Badge | None:
    """Open here, or open as the last transition any replica reported."""
    states = {view.circuit if view is not None else None, summary.circuit if summary is not None else None}
    if "open" in states:
        return Badge("circuit_open", "circuit open", "bad", "requests to the downstream failed in a row: paused")
    if "half_open" in states:
        return Badge("circuit_open", "circuit half-open", "warn", "a trial request is probing the downstream")
    return None


def drift_count(drift: dict[str, Any]) -> int:
    """Users that differ in a reconciliation's summary: missing + stale + extra + duplicates (each a count or
    {count})."""
    if drift.get("outcome") == "clean":
        return 0
    total = 0
    for part in ("missing", "stale", "extra", "duplicates"):
        value = drift.get(part)
        if isinstance(value, dict):
            value = value.get("count")
        if isinstance(value, int) and not isinstance(value, bool):
            total += value
    if total == 0 and drift.get("outcome") == "drift":
        return 1  # drift reported without counts: still worth the badge
    return total
