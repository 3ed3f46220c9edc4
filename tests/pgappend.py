"""A second process appending to a PostgreSQL log: ``python -m tests.pgappend URL NAME N``.

Appends ``N`` records ``SilenceExpired("NAME-i", "NAME")``, all at once (so they queue
and go out in batches), then prints how many it appended."""

from __future__ import annotations

import asyncio
import sys

from obsv.core.events import SilenceExpired
from obsv.pglog import PgEventLog


async def append(url: str, name: str, count: int) -> int:
    """Append ``count`` records concurrently; how many were acknowledged."""
    log = await PgEventLog.open(url)
    log.start()
    try:
        done = await asyncio.gather(*(log.append(SilenceExpired(f"{name}-{i}", name))
                                      for i in range(count)))
    finally:
        await log.close()
    return len(done)


async def bounded(url: str, name: str, count: int) -> int:
    """``append`` within 60 s; past that, every task's stack on stderr and exit 1."""
    try:
        return await asyncio.wait_for(append(url, name, count), 60)
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    print(asyncio.run(bounded(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
