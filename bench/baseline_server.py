"""The ingest baseline: the least a durable receiver must do, and nothing more.

Reads the body, checks the HMAC, parses the JSON, and group-commits one fsync'd
line per request. obsv's ingest is measured against this in the same run.
Usage: python bench/baseline_server.py PORT LOG SECRET [uvloop]
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import orjson
from baseline_http import Batch, Queue, serve


class GroupCommit(Queue):
    """Commits as obsv's log does (obsv/eventlog.py): one thread writes and fsyncs,
    and hands each result back through a callback that answers the batch and sends
    the next one at once, rather than waking a task a turn of the loop later."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.seq = 0
        self.thread = ThreadPoolExecutor(max_workers=1)

    def _write(self, loop: asyncio.AbstractEventLoop, batch: Batch) -> None:
        os.write(self.fd, b"".join(line for line, _ in batch))
        os.fdatasync(self.fd)
        loop.call_soon_threadsafe(self._committed, loop, batch)

    def _committed(self, loop: asyncio.AbstractEventLoop, batch: Batch) -> None:
        for _, future in batch:
            self.seq += 1
            future.set_result(self.seq)
        following, self.queue = self.queue, []
        if following:
            self.thread.submit(self._write, loop, following)
        else:
            self.idle.set_result(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.next_batch()
            self.idle: asyncio.Future[None] = loop.create_future()
            self.thread.submit(self._write, loop, batch)
            await self.idle


def main() -> None:
    port, path, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    if sys.argv[4:] == ["uvloop"]:  # as obsv is run in the same benchmark
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    log = GroupCommit(path)
    tasks: list[asyncio.Task[None]] = []

    async def record(raw: bytes) -> int:
        return int(await log.append(orjson.dumps({"raw": raw.decode()}) + b"\n"))

    async def start() -> None:
        tasks.append(asyncio.create_task(log.run()))

    serve(port, secret, record, start)


if __name__ == "__main__":
    main()
