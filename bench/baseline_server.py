"""The ingest baseline: the least a durable receiver must do, and nothing more.

Reads the body, checks the HMAC, parses the JSON, and group-commits one fsync'd
line per request. obsv's ingest is measured against this in the same run.
Usage: python bench/baseline_server.py PORT LOG SECRET [uvloop]
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
from baseline_http import Queue, serve


class GroupCommit(Queue):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.seq = 0

    def _write(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fdatasync(self.fd)

    async def run(self) -> None:
        # The writer task awaits each batch, the plainest way to group-commit. obsv's
        # log hands its batches back through a callback instead (obsv/eventlog.py);
        # measured here both ways, the baseline was no faster with the callback
        # (bench/README.md), so it keeps the plainer one: the ratio is against the
        # faster baseline.
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.next_batch()
            try:
                await loop.run_in_executor(None, self._write,
                                           b"".join(line for line, _ in batch))
            except OSError as exc:  # answered (a full disk), not the end of the writer
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                self.seq += 1
                if not future.done():  # its request went away
                    future.set_result(self.seq)


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
