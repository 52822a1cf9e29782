"""Measure how long read_committed readers wait after a kill -9 of the service mid-burst, for a
successor under the same instance id and under a new one (the figures of docs/kafka-production.md).

    .venv/bin/python -m scripts.fencing [rounds]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from devkit.fencing import measure_fencing
from devkit.kafka import start_broker, stop_broker
from devkit.local import free_port
from devkit.service import make_settings


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "kafka"
        bootstrap = start_broker(data)
        try:
            for same in (True, False):
                for r in range(rounds):
                    work = Path(tmp) / f"{same}-{r}"
                    work.mkdir()
                    run = await measure_fencing(
                        make_settings(bootstrap, api_port=free_port()), work, same_instance=same
                    )
                    who = "same instance id" if same else "new instance id "
                    print(
                        f"{who}: kill -> readable {run.kill_to_visible:5.1f} s, "
                        f"successor start -> readable {run.spawn_to_visible:5.1f} s (processes: {run.attempts})",
                        flush=True,
                    )
        finally:
            stop_broker(data)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
