"""``obsv render`` prints exactly what the dry-run sink writes (docs/reference.md §1)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from obsv.core.codec import parse_time

from .conftest import SAMPLES, ClientFactory, FakeClock, post_signed, sample, wait_until

FIXTURES = ["event_alert-triggered.json", "event_alert-triggered.python-django-chained.json"]


def render(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obsv", "render", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"})


def outbox_file(outbox: Path) -> Path:
    [path] = [p for p in outbox.iterdir() if p.suffix == ".md"]
    return path


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_render_prints_what_the_dry_run_sink_writes(
        make_client: ClientFactory, tmp_path: Path, fixture: str) -> None:
    body = sample(fixture)
    event = body["data"]["event"]
    # Without a log, "first seen" is the event's own time: the server's first alert of
    # the issue is made to arrive at that very time, so both must agree to the byte.
    client = await make_client(clock=FakeClock(parse_time(event["datetime"])))
    assert (await post_signed(client, body)).status == 202
    outbox = tmp_path / "var" / "outbox"
    await wait_until(lambda: outbox.exists() and any(outbox.glob("*.md")))

    printed = render("--payload", str(SAMPLES / fixture), cwd=tmp_path)

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == outbox_file(outbox).read_text("utf-8")


async def test_render_comment_prints_the_comment_the_outbox_gets(
        make_client: ClientFactory, tmp_path: Path) -> None:
    body = sample(FIXTURES[1])
    start = parse_time(body["data"]["event"]["datetime"])
    clock = FakeClock(start)
    client = await make_client(clock=clock, cooldown_seconds=60)
    assert (await post_signed(client, body)).status == 202
    outbox = tmp_path / "var" / "outbox"
    await wait_until(lambda: outbox.exists() and any(outbox.glob("*.md")))
    clock.advance(minutes=5)
    again = sample(FIXTURES[1])
    again["data"]["event"]["event_id"] = "f" * 32  # the same event, delivered as a new one
    assert (await post_signed(client, again)).status == 202
    await wait_until(lambda: "## Comment" in outbox_file(outbox).read_text("utf-8"))

    printed = render("--payload", str(SAMPLES / FIXTURES[1]), "--comment", cwd=tmp_path)

    assert printed.returncode == 0, printed.stderr
    posted = outbox_file(outbox).read_text("utf-8").split("## Comment\n\n", 1)[1]
    # The same text but for what only the log knows: the event id, and the alert seq
    # in the hidden marker (render has no log: seq 0).
    expected = posted.replace("f" * 32, body["data"]["event"]["event_id"])
    expected = re.sub(r"comment-for-alert=\d+ ", "comment-for-alert=0 ", expected)
    assert printed.stdout == expected


@pytest.mark.parametrize(("payload", "message"), [
    ("[1]", "not a usable event_alert (body)"),
    ("not json", "not JSON"),
])
def test_render_refuses_a_bad_payload_in_one_line(tmp_path: Path, payload: str,
                                                  message: str) -> None:
    path = tmp_path / "payload.json"
    path.write_text(payload)
    printed = render("--payload", str(path), cwd=tmp_path)
    assert printed.returncode == 2
    assert message in printed.stderr and printed.stderr.count("\n") == 1
    assert printed.stdout == ""


def test_render_without_a_payload_uses_the_sample(tmp_path: Path) -> None:
    printed = render(cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("# [error] ReferenceError")
    assert printed.stdout.rstrip().endswith("<!-- obsv:sentry-issue=1117540176 -->")


def test_render_refuses_a_payload_the_server_would_refuse_as_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2_000_000 + b"{}")  # over the default 1 MiB, read no further
    printed = render("--payload", str(path), cwd=tmp_path)
    assert printed.returncode == 2
    assert "larger than OBSV_MAX_BODY_BYTES" in printed.stderr
    assert printed.stderr.count("\n") == 1 and printed.stdout == ""
