"""End to end: from the 202 to the create-issue request arriving at a fake GitHub on
loopback, at a steady rate under GitHub's one-write-a-second spacing. The baseline
is the same create request sent straight from this process with gidgethub (the
floor the service can approach), measured in the same run."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import gidgethub.aiohttp

from bench.common import free_port, median, percentile, signed_deliveries, spawn, wait_http
from tests.fakes import FakeGitHub

SECRET = "bench-secret"
ALERTS = 20
INTERVAL = 1.25  # seconds between alerts: just under GitHub's write pace


async def _baseline(github: FakeGitHub) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as session:
        gh = gidgethub.aiohttp.GitHubAPI(session, "bench", oauth_token="test-token",
                                         base_url=github.base_url)
        for n in range(ALERTS):
            started = time.time()
            await gh.post("/repos/acme/shop/issues", data={"title": f"t{n}", "body": "b"})
            times.append(github.requests("create_issue")[-1].wall - started)
    return times


async def run() -> dict[str, Any]:
    github = FakeGitHub()
    await github.start()
    baseline = await _baseline(github)
    github.journal.clear()
    github.issues.clear()
    acked: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        port = free_port()
        proc = spawn(["-m", "obsv", "serve"], env={
            "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_PORT": str(port),
            "OBSV_EVENT_LOG": str(Path(tmp, "events.jsonl")), "OBSV_LOG_FORMAT": "json",
            "OBSV_GITHUB_TOKEN": "test-token", "OBSV_GITHUB_REPO": "acme/shop",
            "OBSV_GITHUB_API_URL": github.base_url, "OBSV_MAX_ISSUES_PER_HOUR": "1000"})
        try:
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            url = f"http://127.0.0.1:{port}/webhooks/sentry"
            deliveries = signed_deliveries(SECRET, ALERTS, prefix="e")
            async with aiohttp.ClientSession() as session:
                for n, (raw, headers) in enumerate(deliveries):
                    async with session.post(url, data=raw, headers={**headers}) as response:
                        assert response.status == 202
                        acked[f"obsv:sentry-issue={1000 + n % 50}"] = time.time()
                    await asyncio.sleep(INTERVAL)
            deadline = time.time() + 30
            while len(github.requests("create_issue")) < ALERTS and time.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    await github.close()
    lags = []
    for request in github.requests("create_issue"):
        marker = next(m for m in acked if m in request.body["body"])
        lags.append(request.wall - acked[marker])
    return {
        "name": "end to end",
        "rows": [
            ("load", f"{ALERTS} alerts, one every {INTERVAL} s, each a new issue"),
            ("direct gidgethub create p50 / p99",
             f"{median(baseline) * 1e3:.1f} / {percentile(baseline, 99) * 1e3:.1f} ms"),
            ("202 -> create at GitHub p50 / p99",
             f"{median(lags) * 1e3:.1f} / {percentile(lags, 99) * 1e3:.1f} ms"
             f"  ({len(lags)} issues)"),
            ("ratio (p50)", f"{median(lags) / median(baseline):.1f}x the direct request "
                            "(the first includes creating the label)"),
        ],
    }


def main() -> dict[str, Any]:
    return asyncio.run(run())
