"""What the activity log keeps of a reconciliation report: its figures, every kind of drift, no lists."""

from __future__ import annotations

from service.pipeline.reconcile import DRIFT_KINDS, drift_counts


def report(**counts: int) -> dict[str, object]:
    kinds = ("missing", "stale", "extra", "duplicates")
    return {
        "dry_run": True,
        "keycloak_users": 3,
        "downstream_users": 4,
        "fixes_queued": 0,
        **{kind: {"count": counts.get(kind, 0), "users": [{"id": "u1"}]} for kind in kinds},
    }


def test_every_kind_of_user_drift_is_counted_and_no_list_is_kept() -> None:
    counts = drift_counts(report(missing=1, duplicates=2))
    assert counts == {
        "dry_run": True,
        "keycloak_users": 3,
        "downstream_users": 4,
        "fixes_queued": 0,
        "missing": 1,
        "stale": 0,
        "extra": 0,
        "duplicates": 2,
    }
    assert {"missing", "stale", "extra", "duplicates"} <= set(DRIFT_KINDS)
