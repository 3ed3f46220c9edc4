"""`obsv send-test` against a real server on loopback: success, wrong secret, nothing there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import obsv

from .conftest import SECRET, deliveries, read_log
from .process import ServeProcess, free_port


def send_test(*args: str, cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obsv", "send-test", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


async def test_send_test_success_wrong_secret_and_nothing_listening(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(log),
                                     "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    await server.start()
    try:
        ok = send_test(cwd=tmp_path, env={"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                          "OBSV_PORT": str(server.port)})
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith('202 {"status":"accepted","seq":')
        assert "accepted" in ok.stderr
        # Twice in a row: a fresh event_id each time, so never a duplicate.
        again = send_test("--url", server.url, "--secret", SECRET, cwd=tmp_path)
        assert again.returncode == 0
        ids = {r["alert"]["event_id"] for r in deliveries(log)}
        assert len(ids) == 2

        wrong = send_test("--url", server.url + "/webhooks/sentry", "--secret", "nope",
                          cwd=tmp_path)
        assert wrong.returncode == 1
        assert wrong.stdout.startswith('401 {"error":"invalid_signature"}')
        assert "secret here differs from the server's OBSV_SENTRY_CLIENT_SECRET" in wrong.stderr
    finally:
        server.stop()

    nobody = send_test("--url", f"http://127.0.0.1:{free_port()}", "--secret", "x", cwd=tmp_path)
    assert nobody.returncode == 1
    assert nobody.stderr.startswith("send-test: nothing answers at http://127.0.0.1:")
    assert "Traceback" not in nobody.stderr


def test_send_test_with_a_payload_file(tmp_path: Path) -> None:
    missing = send_test("--url", "http://127.0.0.1:9", "--secret", "x", "--payload",
                        str(tmp_path / "nope.json"), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("obsv: --payload") and missing.stderr.count("\n") == 1


def test_send_test_without_secret_names_the_setting(tmp_path: Path) -> None:
    result = send_test("--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2
    assert "OBSV_SENTRY_CLIENT_SECRET is not set" in result.stderr


def record_of(log: Path, resource: str) -> list[dict[str, object]]:
    return [r for r in read_log(log)
            if isinstance(r.get("delivery"), dict) and r["delivery"]["resource"] == resource]


async def test_send_test_other_resources(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(log),
                                     "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    payload = tmp_path / "resolved.json"
    payload.write_text('{"action":"resolved","data":{"metric_alert":{"id":"7"}}}')
    await server.start()
    try:
        issue = send_test("--url", server.url, "--secret", SECRET, "--resource", "issue",
                          cwd=tmp_path)
        own = send_test("--url", server.url, "--secret", SECRET, "--resource", "metric_alert",
                        "--payload", str(payload), cwd=tmp_path)
    finally:
        server.stop()

    assert issue.returncode == 0, issue.stderr
    assert issue.stdout.startswith("202 ") and "Sentry issue change" in issue.stderr
    [record] = record_of(log, "issue")
    assert json.loads(str(record["raw"]))["data"]["issue"]["id"] == "1170820242"
    assert own.returncode == 0, own.stderr
    [record] = record_of(log, "metric_alert")
    assert record["raw"] == payload.read_text()
    assert record_of(log, "event_alert") == []


@pytest.mark.parametrize("name", ["nope", "Issue", "../cli"])
def test_send_test_resource_without_a_sample(tmp_path: Path, name: str) -> None:
    result = send_test("--url", "http://127.0.0.1:9", "--secret", "x", "--resource", name,
                       cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"obsv: --resource {name!r}") and "issue" in result.stderr
    assert result.stderr.count("\n") == 1


def test_send_test_help_lists_every_sample() -> None:
    samples = sorted(p.stem for p in (Path(obsv.__file__).parent / "samples").glob("*.json"))
    assert len(samples) >= 6
    help_text = send_test("--help", cwd=Path.cwd()).stdout
    assert all(name in help_text for name in samples), (samples, help_text)
