"""A log on a real, tiny tmpfs: a full disk answers 503 and corrupts nothing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsv.settings import Settings

from .conftest import ClientFactory, alert_body, post_signed, read_log


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted under tmp_path (needs root; CI runs as root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` with one file until about ``leave_bytes`` are free."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - leave_bytes))
    return filler


async def test_full_disk_is_503_and_recovers(make_client: ClientFactory, settings: Settings,
                                             tiny_disk: Path) -> None:
    log_path = tiny_disk / "events.jsonl"
    client = await make_client(event_log=log_path)
    assert (await post_signed(client, alert_body(event_id="a" * 32))).status == 202
    filler = fill(tiny_disk, leave_bytes=12 * 1024)

    statuses = []
    for n in range(10):
        response = await post_signed(client, alert_body(event_id=f"{n:032x}"))
        statuses.append(response.status)
        if response.status == 503:
            assert response.headers["Retry-After"].isdigit()
            assert await response.json() == {"error": "log_unavailable"}
            break
    assert statuses[-1] == 503, statuses
    accepted = 1 + statuses.count(202)
    records = read_log(log_path)  # asserts every line is whole and parses
    assert [r["seq"] for r in records] == list(range(1, accepted + 1))
    assert log_path.read_bytes().endswith(b"\n")
    ready = await client.get("/readyz")
    assert ready.status == 503

    filler.unlink()
    response = await post_signed(client, alert_body(event_id="b" * 32))
    assert response.status == 202
    assert (await response.json())["seq"] == accepted + 1
    assert (await client.get("/readyz")).status == 200
    assert [r["seq"] for r in read_log(log_path)] == list(range(1, accepted + 2))
