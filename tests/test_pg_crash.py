"""SIGKILL a real ``obsv serve`` on PostgreSQL under load, three times: every 202
survives, seq stays gapless, every alert is decided once (docs/reference.md §12)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from obsv.cli import main

from .conftest import SECRET
from .process import ServeProcess
from .test_crash import assert_acknowledged_and_decided_once, kill_under_load
from .test_pg_pages import read_back


async def test_sigkill_under_load_loses_no_acknowledged_delivery(tmp_path: Path,
                                                                 pg_url: str) -> None:
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_DATABASE_URL": pg_url,
                                     "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    acked = await kill_under_load(server)
    assert server.stop() == 0

    data = await asyncio.get_running_loop().run_in_executor(None, read_back, pg_url)
    records = [orjson.loads(line) for line in data.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert_acknowledged_and_decided_once(records, acked)
    exported = tmp_path / "exported.jsonl"
    exported.write_bytes(data)
    assert main(["replay", str(exported), "--verify"]) == 0
