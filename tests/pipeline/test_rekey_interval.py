"""Stage 1's transaction interval (rekey_transaction_interval_ms): at most one transaction per interval."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from pydantic import SecretStr

from service.metrics import Metrics
from service.pipeline.rekey import RekeyStage
from service.settings import Settings

TP = TopicPartition("keycloak-events", 0)


def settings(interval_ms: int) -> Settings:
    return Settings(token_key=SecretStr("k"), admin_token=SecretStr("a"), rekey_transaction_interval_ms=interval_ms)


class Consumer:
    """Hands out a record whenever asked, noting when."""

    def __init__(self) -> None:
        self.polled: list[float] = []

    async def getmany(self, *_: Any, **__: Any) -> dict[TopicPartition, list[object]]:
        self.polled.append(asyncio.get_running_loop().time())
        return {TP: [object()]}


async def polls(interval_ms: int, batches: int) -> list[float]:
    """When stage 1's loop polled, for its first `batches` transactions (each published at once)."""
    stage = RekeyStage(settings(interval_ms), Metrics())
    consumer = Consumer()
    stage._consumer = consumer  # type: ignore[assignment]
    published = asyncio.Event()
    count = 0

    async def publish(_: object) -> None:
        nonlocal count
        count += 1
        if count == batches:
            published.set()

    stage._publish = publish  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(stage._run())
    await asyncio.wait_for(published.wait(), timeout=10)
    task.cancel()
    return consumer.polled[:batches]


async def test_transactions_start_at_most_once_per_interval() -> None:
    times = await polls(50, 5)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - 0.002  # the loop's clock resolution


async def test_without_an_interval_every_poll_is_a_transaction_at_once() -> None:
    times = await polls(0, 20)
    assert times[-1] - times[0] < 0.05 * 19


@pytest.mark.parametrize("interval_ms", [-1, 1001])
def test_the_interval_is_bounded(interval_ms: int) -> None:
    with pytest.raises(ValueError, match="rekey_transaction_interval_ms"):
        settings(interval_ms)
