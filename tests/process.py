"""A real ``obsv serve`` in a child process, for crash and CLI tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServeProcess:
    """``python -m obsv serve`` with settings passed as ``OBSV_*`` variables."""

    def __init__(self, workdir: Path, env: dict[str, str],
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.preexec_fn = preexec_fn  # runs in the child before exec (e.g. setrlimit)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {**os.environ, "OBSV_PORT": str(self.port), "OBSV_LOG_FORMAT": "json", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = workdir / f"serve-{self.port}.log"

    async def start(self, timeout: float = 20.0) -> None:
        """Start and wait until ``/readyz`` answers 200."""
        stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - the child keeps it open
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "obsv", "serve"], cwd=self.workdir, env=self.env,
            stdout=stderr, stderr=stderr, preexec_fn=self.preexec_fn)
        stderr.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"obsv serve exited: {self.stderr_path.read_text()}")
                try:
                    async with session.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"obsv serve not ready in {timeout}s: {self.stderr_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, like a power cut for the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)
