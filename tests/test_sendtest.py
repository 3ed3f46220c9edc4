"""`obsv send-test` against a real server on loopback: success, wrong secret, nothing there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import SECRET, deliveries
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
