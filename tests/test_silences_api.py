"""The admin API through the real server, and the CLI against a real ``obsv serve``
(docs/reference.md §3, §9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import (
    SECRET,
    ClientFactory,
    alert_body,
    post_signed,
    records_of,
    sentry_bytes,
    signed_headers,
    wait_until,
)
from .process import ServeProcess

TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADD = {"matchers": ["project=front-end", "title=~ReferenceError.*"], "duration": "2h",
       "comment": "known, fix in review", "created_by": "ana"}


async def test_without_a_token_every_api_path_is_404(make_client: ClientFactory) -> None:
    client = await make_client()
    for method, path in (("GET", "/api/silences"), ("POST", "/api/silences"),
                         ("DELETE", "/api/silences/x"), ("GET", "/api/anything")):
        answer = await client.request(method, path, headers=AUTH)
        assert answer.status == 404, (method, path)


async def test_a_missing_or_wrong_token_is_401(make_client: ClientFactory) -> None:
    client = await make_client(admin_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        answer = await client.get("/api/silences", headers=headers)
        assert answer.status == 401, headers
        assert await answer.json() == {"error": "unauthorized"}
    assert (await client.post("/api/silences", json=ADD)).status == 401


async def test_bad_bodies_are_400_naming_the_field(make_client: ClientFactory,
                                                   tmp_path: Path) -> None:
    client = await make_client(admin_token=TOKEN)
    cases: dict[str, Any] = {
        "matchers[1]": {**ADD, "matchers": ["project=web", "title=~(a+)+"]},
        "matchers[0]": {**ADD, "matchers": ["colour=red"]},
        "comment": {k: v for k, v in ADD.items() if k != "comment"},
        "ends_at": {**{k: v for k, v in ADD.items() if k != "duration"},
                    "ends_at": "2001-01-01T00:00:00Z"},
    }
    for field, body in cases.items():
        answer = await client.post("/api/silences", json=body, headers=AUTH)
        assert answer.status == 400
        assert (await answer.json())["field"] == field
    answer = await client.post("/api/silences", data=b"{not json", headers=AUTH)
    assert answer.status == 400 and (await answer.json())["error"] == "invalid_json"
    answer = await client.post("/api/silences", data=b"x" * 70_000, headers=AUTH)
    assert answer.status == 413
    assert records_of(tmp_path / "var" / "events.jsonl", "silence.added") == []


async def test_add_silences_the_next_alert_and_expire_lets_the_next_through(
        make_client: ClientFactory, tmp_path: Path) -> None:
    log = tmp_path / "var" / "events.jsonl"
    client = await make_client(admin_token=TOKEN)
    added = await client.post("/api/silences", json=ADD, headers=AUTH)
    assert added.status == 201
    silence_id = (await added.json())["id"]
    [record] = records_of(log, "silence.added")  # durable before the 201
    assert record["id"] == silence_id and record["matchers"] == ADD["matchers"]
    assert record["comment"] == ADD["comment"] and record["created_by"] == "ana"

    listed = await (await client.get("/api/silences", headers=AUTH)).json()
    [shown] = listed["silences"]
    assert shown["id"] == silence_id and shown["active"] is True
    assert shown["expired_at"] is None

    assert (await post_signed(client, alert_body("a" * 32))).status == 202
    await wait_until(lambda: len(records_of(log, "alert.decided")) == 1)
    [decided] = records_of(log, "alert.decided")
    assert (decided["action"], decided["reason"], decided["silence_id"]) == (
        "suppress", "silenced", silence_id)

    assert (await client.delete("/api/silences/nope?by=bo", headers=AUTH)).status == 404
    expired = await client.delete(f"/api/silences/{silence_id}?by=bo", headers=AUTH)
    assert expired.status == 200
    assert records_of(log, "silence.expired")[0]["by"] == "bo"
    listed = await (await client.get("/api/silences", headers=AUTH)).json()
    assert listed["silences"][0]["active"] is False
    assert listed["silences"][0]["expired_at"] is not None

    assert (await post_signed(client, alert_body("b" * 32))).status == 202
    await wait_until(lambda: len(records_of(log, "alert.decided")) == 2)
    assert records_of(log, "alert.decided")[1]["action"] == "open"


def _obsv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obsv", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def _serve_env(log: Path) -> dict[str, str]:
    return {"OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_EVENT_LOG": str(log),
            "OBSV_OUTBOX_DIR": str(log.parent / "outbox"), "OBSV_ADMIN_TOKEN": TOKEN}


async def _served(tmp_path: Path, log: Path) -> tuple[ServeProcess, dict[str, str],
                                                        dict[str, str]]:
    """``obsv serve`` on ``log``, the environment without obsv's settings, and the
    environment of a CLI that talks to that server's admin API."""
    server = ServeProcess(tmp_path, _serve_env(log))
    await server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSV_")}
    return server, env, {**env, "OBSV_ADMIN_URL": server.url, "OBSV_ADMIN_TOKEN": TOKEN}


async def test_the_cli_against_a_real_server_and_replay_after_restart(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    server, env, cli = await _served(tmp_path, log)
    try:
        added = _obsv(cli, "silence", "add", "project=front-end", "level=~err.*", "--for",
                      "1h", "--comment", "deploy in progress", "--by", "ana")
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.split()[-1]
        listed = _obsv(cli, "silence", "list")
        assert listed.returncode == 0 and silence_id in listed.stdout
        assert "active" in listed.stdout and "deploy in progress" in listed.stdout

        bad = _obsv(cli, "silence", "add", "colour=red", "--for", "1h")
        assert bad.returncode == 1
        assert bad.stderr.count("\n") == 1 and "matchers[0]" in bad.stderr
        wrong = _obsv({**cli, "OBSV_ADMIN_TOKEN": "wrong"}, "silence", "list")
        assert wrong.returncode == 1 and "401" in wrong.stderr
        none = _obsv({**env, "OBSV_ADMIN_URL": server.url}, "silence", "list")
        assert none.returncode == 2 and "OBSV_ADMIN_TOKEN" in none.stderr

        async with aiohttp.ClientSession() as session:
            raw = sentry_bytes(alert_body("c" * 32))
            async with session.post(server.url + "/webhooks/sentry", data=raw,
                                    headers=signed_headers(raw)) as answer:
                assert answer.status == 202
            await wait_until(lambda: len(records_of(log, "alert.decided")) == 1)
            expired = _obsv(cli, "silence", "expire", silence_id, "--by", "bo")
            assert expired.returncode == 0, expired.stderr
            raw = sentry_bytes(alert_body("d" * 32))
            async with session.post(server.url + "/webhooks/sentry", data=raw,
                                    headers=signed_headers(raw)) as answer:
                assert answer.status == 202
            await wait_until(lambda: len(records_of(log, "alert.decided")) == 2)
    finally:
        server.stop()
    first, second = records_of(log, "alert.decided")
    assert (first["reason"], first["silence_id"]) == ("silenced", silence_id)
    assert second["action"] == "open"

    server = ServeProcess(tmp_path, _serve_env(log))  # a restart folds the silences again
    await server.start()
    server.stop()
    verify = _obsv({**env, "OBSV_EVENT_LOG": str(log)}, "replay", "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    why = _obsv({**env, "OBSV_EVENT_LOG": str(log)}, "why", "1117540176")
    assert why.returncode == 0, why.stderr
    assert f"silence {silence_id}" in why.stdout and "by ana" in why.stdout
    assert "'deploy in progress'" in why.stdout and "expired" in why.stdout


async def test_a_silence_added_whose_answer_is_lost_says_it_was_added(tmp_path: Path) -> None:
    """``obsv silence add ... > /dev/full``: the answer cannot be written, but the silence
    is there; the one line says so, lest a retry add a second one."""
    server, _env, cli = await _served(tmp_path, tmp_path / "events.jsonl")
    try:
        with open("/dev/full", "wb") as full:
            added = subprocess.run([sys.executable, "-m", "obsv", "silence", "add",
                                    "project=front-end", "--for", "1h"], env=cli, stdout=full,
                                   stderr=subprocess.PIPE, text=True, timeout=60, check=False)
        listed = _obsv(cli, "silence", "list")
    finally:
        server.stop()
    assert added.returncode == 2
    assert added.stderr == ("obsv: cannot write the answer to standard output: No space left "
                            "on device; free space on its disk or send the output elsewhere "
                            "(the silence was added; only its answer is lost)\n")
    assert listed.stdout.count("front-end") == 1
