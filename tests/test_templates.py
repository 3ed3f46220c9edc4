"""Operator templates (docs/reference.md §10): used by the real server, fed inert values,
the marker appended by obsv, and a broken template stopping ``obsv serve`` with exit 2."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from obsv.cli import main
from obsv.settings import Settings

from .conftest import SECRET, FakeClock, alert_body, post_signed, wait_until
from .fakes import FakeGitHub, start_service_against

HOSTILE = "<img src=x onerror=alert(1)> @octocat #12"


@pytest.fixture
async def github() -> Any:
    fake = FakeGitHub()
    await fake.start()
    yield fake
    await fake.close()


def templates(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text, "utf-8")
    return folder


async def test_custom_title_body_and_comment_reach_github(
        github: FakeGitHub, aiohttp_client: Any, settings: Settings, tmp_path: Path) -> None:
    folder = templates(tmp_path, title_j2="[{{ level }}] {{ exception.type }} in {{ release }}",
                       body_md_j2="Crash in {{ location.function|code }}\n\n"
                                  "{{ exception.value|fence }}\n",
                       comment_md_j2="Again: {{ suppressed_count }} held back, "
                                     "{{ reason }}, {{ event_id|code }}\n")
    clock = FakeClock(datetime(2026, 11, 26, 8, tzinfo=UTC))
    service = await start_service_against(github, aiohttp_client, settings, clock=clock,
                                          template_dir=folder)
    body = alert_body(release="shop@2.3.1")
    body["data"]["event"]["exception"]["values"][0]["value"] = HOSTILE
    assert (await post_signed(service.client, body)).status == 202
    await wait_until(lambda: bool(github.requests("create_issue")))
    sent = github.requests("create_issue")[0].body
    assert sent["title"] == "[error] ReferenceError in shop@\u200b2.3.1"  # as built-in titles
    assert sent["body"].startswith("Crash in `?`\n\n```text\n" + HOSTILE + "\n```")
    assert sent["body"].rstrip().endswith("<!-- obsv:sentry-issue=1117540176 -->")
    clock.advance(hours=7)
    assert (await post_signed(service.client, alert_body("f" * 32), request_id="r2")).status == 202
    await wait_until(lambda: bool(github.requests("create_comment")))
    comment = github.requests("create_comment")[0].body["body"]
    assert comment.startswith("Again: 0 held back, recurrence, `" + "f" * 32 + "`")


async def test_a_template_cannot_print_the_marker_or_raw_html(
        github: FakeGitHub, aiohttp_client: Any, settings: Settings, tmp_path: Path) -> None:
    folder = templates(tmp_path, body_md_j2="<!-- obsv:sentry-issue=999 -->\n"
                                            "{{ exception.value|safe }} {{ exception.value }}\n"
                                            "{{ exception.value|string }}\n")
    service = await start_service_against(github, aiohttp_client, settings, template_dir=folder)
    body = alert_body()
    body["data"]["event"]["exception"]["values"][0]["value"] = HOSTILE
    assert (await post_signed(service.client, body)).status == 202
    await wait_until(lambda: bool(github.requests("create_issue")))
    text = github.requests("create_issue")[0].body["body"]
    assert text.count("<!-- obsv:") == 1
    assert text.rstrip().endswith("<!-- obsv:sentry-issue=1117540176 -->")
    assert "<img" not in text and "@octocat" not in text and "#12" not in text


@pytest.mark.parametrize(("source", "line"), [
    ("ok\n{% if %}\n", 2),
    ("line one\nline two\n{{ no_such_variable }}\n", 3),
])
def test_a_broken_template_stops_serve_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        source: str, line: int) -> None:
    folder = templates(tmp_path, body_md_j2=source)
    monkeypatch.setenv("OBSV_SENTRY_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("OBSV_EVENT_LOG", str(tmp_path / "events.jsonl"))
    monkeypatch.setenv("OBSV_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("OBSV_TEMPLATE_DIR", str(folder))
    monkeypatch.setenv("OBSV_PORT", "0")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"template {folder / 'body.md.j2'} line {line}:" in err
