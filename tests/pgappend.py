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


if __name__ == "__main__":
    print(asyncio.run(append(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
