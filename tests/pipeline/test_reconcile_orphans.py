"""Reconciliation hands the extra accounts that carry an externalId to the pipeline as orphan checks
(the applier decides from the user's state whether the account is provably ours); it never does so on a
dry run, nor for a tenant whose users are found by userName."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.pipeline.reconcile import Reconciler
from service.retry import RetryPolicy
from service.scim.client import Downstream
from tests.pipeline.test_snapshot_times import PAGES, PagedKeycloak, RecordingProducer

ACCOUNTS = [
    {"id": "d1", "externalId": "u1", "userName": "u1"},  # a Keycloak user's
    {"id": "d9", "externalId": "gone", "userName": "zombie"},  # an id Keycloak does not have
    {"id": "d8", "userName": "by-hand"},  # no externalId: nobody's, never checked
]


class Listed:
    async def list_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        for account in ACCOUNTS:
            yield account


async def run(ds: Downstream, dry_run: bool) -> tuple[dict[str, Any], RecordingProducer]:
    producer = RecordingProducer()
    reconciler = Reconciler(PagedKeycloak(PAGES), Listed(), producer, "changes", Metrics(CollectorRegistry()))
    return await reconciler.run(ds, dry_run=dry_run), producer


async def test_an_extra_account_with_an_external_id_is_queued_as_an_orphan_check() -> None:
    report, producer = await run(Downstream("acme", "https://scim.example", "t"), dry_run=False)
    orphans = [c for c in producer.sent if c.orphan]
    assert [(c.realm, c.user_id, c.op, dict(c.attributes), c.force) for c in orphans] == [
        ("acme", "gone", "upsert", {}, False)
    ]
    assert report["extra"]["count"] == 2  # still reported, both
    assert not any(c.orphan for c in producer.sent if c.user_id != "gone")


@pytest.mark.parametrize("lookup", ["externalId", "userName"])
async def test_no_orphan_check_on_a_dry_run_nor_where_users_are_found_by_user_name(lookup: str) -> None:
    ds = Downstream("acme", "https://scim.example", "t", user_lookup=lookup)  # type: ignore[arg-type]
    _, producer = await run(ds, dry_run=lookup == "externalId")
    assert not any(c.orphan for c in producer.sent)
