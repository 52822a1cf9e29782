"""Provision one user now (Entra's "provision on demand"): read it from Keycloak, make the downstream
match, and return every step: what Keycloak said, the plan, each request sent and its answer.

It runs outside the keyed pipeline, for an operator checking one user; it writes every attribute
(forced), so it also repairs drift the stored state does not know about.
"""

from __future__ import annotations

import time
from typing import Any

from service.domain.activity import ANSWER_CHARS, ActivityEntry, ActivitySink, SentRequest
from service.domain.changes import UserChange, user_attributes_of
from service.domain.plan import plan_change
from service.domain.stamps import ChangeSource
from service.domain.state import UserState
from service.errors import ScimError
from service.keycloak_admin.mapping import user_attributes
from service.pipeline.ports import UserReader
from service.scim.client import ScimClient
from service.scim.executor import execute
from service.scim.transport import recording
from service.tenants.models import Tenant


async def provision_now(
    keycloak: UserReader, scim: ScimClient, tenant: Tenant, user_id: str, activity: ActivitySink | None = None
) -> dict[str, Any]:
    """The report of one user provisioned now; `activity` (if set) hears it, with the requests sent."""
    with recording() as sent:
        report = await _provision_now(keycloak, scim, tenant, user_id)
    if activity is not None:
        activity.record(_sync_entry(tenant, user_id, report, sent))
    return report


def _sync_entry(tenant: Tenant, user_id: str, report: dict[str, Any], sent: list[SentRequest]) -> ActivityEntry:
    read: dict[str, Any] = next((s for s in report["steps"] if s.get("step") == "read_keycloak"), {})
    name = (read.get("attributes") or {}).get("userName")
    plan: dict[str, Any] = next((s for s in report["steps"] if s.get("step") == "plan"), {})
    detail = {"error": report["error"][:ANSWER_CHARS]} if "error" in report else {}
    return ActivityEntry(
        time.time(),
        tenant.realm,
        tenant.name,
        "sync",
        str(report["result"]),
        user_id,
        name if isinstance(name, str) else None,
        str(plan["action"]) if "action" in plan else None,
        report.get("reason"),
        tuple(sent),
        detail,
    )


async def _provision_now(keycloak: UserReader, scim: ScimClient, tenant: Tenant, user_id: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    rep = await keycloak.get_user(tenant.realm, user_id)
    now = int(time.time() * 1000)
    if rep is None:
        steps.append({"step": "read_keycloak", "found": False})
        change = UserChange(
            tenant.realm,
            user_id,
            "delete",
            now,
            "ON_DEMAND",
            force=True,
            source=ChangeSource.ON_DEMAND,
            downstream=tenant.name,
        )
    else:
        attributes = user_attributes(rep)
        steps.append({"step": "read_keycloak", "found": True, "attributes": attributes})
        change = UserChange(
            tenant.realm,
            user_id,
            "upsert",
            now,
            "ON_DEMAND",
            attributes=attributes,
            force=True,
            source=ChangeSource.ON_DEMAND,
            user_attributes=user_attributes_of(rep) or {},
            user_attributes_complete=True,  # the stored user: an attribute it lacks is none
            downstream=tenant.name,
        )
    plan = plan_change(UserState(), change, tenant.delete_policy, tenant.mapping.keys)
    steps.append({"step": "plan", "action": plan.action, "attributes": sorted(plan.changed), "reason": plan.reason})
    traced, tracer = scim.traced()  # every request and its answer join the steps
    try:
        outcome = await execute(plan, change, tenant.downstream, traced)
    except ScimError as exc:
        return {
            "realm": tenant.realm,
            "user_id": user_id,
            "result": "failed",
            "error": str(exc),
            "steps": steps + tracer.steps,
        }
    return {
        "realm": tenant.realm,
        "user_id": user_id,
        "result": outcome.result,
        "reason": outcome.reason or None,
        "downstream_id": outcome.state.downstream_id,
        "steps": steps + tracer.steps,
    }
