"""Per-user ordering although the plugin's null keys spread one user's events over every partition."""

from __future__ import annotations

from tests import events as ev
from tests.integration.conftest import Pipeline
from tests.support import by_external_id, wait_until


async def test_fifty_alternating_toggles_over_three_partitions_end_in_the_last_state(pipeline: Pipeline) -> None:
    """One user, 50 alternating enable/disable events round-robin over 3 source partitions -> the last wins."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "toggler", "toggler"))
    await pipeline.wait_user(realm, "toggler", active=True)
    toggles = [ev.update_user(realm, "toggler", enabled=(i % 2 == 0)) for i in range(50)]
    assert toggles[-1]["representation"] == '{"enabled": false}'
    await pipeline.admin(*toggles, partitions=3)

    async def all_applied() -> bool:
        applied = sum(
            pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome=outcome)
            for outcome in ("updated", "unchanged", "skipped", "coalesced")
        )
        return applied >= 50

    await wait_until(all_applied, what="50 toggles applied")
    user = await pipeline.user_by_external_id(realm, "toggler")
    assert user is not None and user["active"] is False


async def test_five_hundred_users_at_once_each_end_in_their_last_state(pipeline: Pipeline) -> None:
    """500 users, each created then renamed three times and (every other one) disabled -> each ends last."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    batch = []
    for n in range(500):
        uid = f"user-{n:03d}"
        batch.append(ev.create_user(realm, uid, f"login{n:03d}", "First", "Last"))
    for version in (1, 2, 3):
        batch += [ev.update_user(realm, f"user-{n:03d}", lastName=f"Last-v{version}") for n in range(500)]
    batch += [ev.update_user(realm, f"user-{n:03d}", enabled=False) for n in range(0, 500, 2)]
    await pipeline.admin(*batch, partitions=3)

    async def converged() -> bool:
        users = by_external_id(await pipeline.users(realm))
        if len(users) < 500:
            return False
        return all(
            len(users[f"user-{n:03d}"]) == 1
            and users[f"user-{n:03d}"][0]["name"]["familyName"] == "Last-v3"
            and users[f"user-{n:03d}"][0]["active"] is (n % 2 == 1)
            for n in range(500)
        )

    await wait_until(converged, timeout=120, what="500 users in their last state")
    assert len(await pipeline.users(realm)) == 500
