"""A replica killed (-9) with a stage-1 transaction open, restarted under the same instance id (a
container restarting in its pod): the successor fences the open transaction when it starts, so
read_committed readers of the changes topic wait for the restart, not for the transaction timeout."""

from __future__ import annotations

from pathlib import Path

from devkit.fencing import measure_fencing
from tests.support import free_port, make_settings

TRANSACTION_TIMEOUT_SECONDS = 20.0


async def test_a_restart_under_the_same_instance_id_fences_the_killed_transaction_at_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """kill -9 mid-burst, restart with the same instance id -> records past the killed transaction are
    readable within a few seconds of the successor's start, well before the 20 s transaction timeout."""
    settings = make_settings(kafka_bootstrap, api_port=free_port())
    run = await measure_fencing(settings, tmp_path, same_instance=True)
    assert run.spawn_to_visible < TRANSACTION_TIMEOUT_SECONDS / 2, run
    assert run.kill_to_visible < TRANSACTION_TIMEOUT_SECONDS, run
