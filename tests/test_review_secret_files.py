"""A secret file that is not a file (a FIFO nobody writes) must not hang start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_fifo_as_secret_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "secret"
    os.mkfifo(fifo, 0o600)
    result = subprocess.run(
        [sys.executable, "-m", "obsv", "serve"], capture_output=True, text=True,
        cwd=tmp_path, timeout=5, check=False,
        env={"PATH": "/usr/bin:/bin", "OBSV_PORT": "0",
             "OBSV_SENTRY_CLIENT_SECRET_FILE": str(fifo),
             "OBSV_EVENT_LOG": str(tmp_path / "events.jsonl"),
             "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    assert result.returncode == 2
    assert result.stderr.startswith(f"obsv: OBSV_SENTRY_CLIENT_SECRET_FILE: {fifo}")
    assert result.stderr.count("\n") == 1
