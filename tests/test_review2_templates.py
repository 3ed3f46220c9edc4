"""Adversarial pass over operator templates (docs/reference.md §10): templates that try
to hang obsv or fill its memory, template files that are not files, through
``obsv render`` and ``obsv serve`` as real processes, and the renderer itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from obsv.errors import StartupError
from obsv.templates import load_renderer

from .conftest import SECRET, alert_body, records_of, sentry_bytes, signed_headers
from .process import ServeProcess

# Two nested loops of 100,000 each: Jinja's sandbox allows each range, not their product.
NESTED = ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}"
          "{% endfor %}")


def render(template_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``obsv render`` with templates; a hang fails the test instead of stopping it."""
    return subprocess.run([sys.executable, "-m", "obsv", "render", *args],
                          cwd=template_dir.parent, capture_output=True, text=True, timeout=30,
                          check=False, env={"PATH": "/usr/bin:/bin",
                                            "OBSV_TEMPLATE_DIR": str(template_dir)})


def templates(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_a_template_that_loops_forever_stops_the_start_in_one_line(tmp_path: Path) -> None:
    directory = templates(tmp_path, **{"body.md.j2": "start\n" + NESTED + "\n"})
    printed = render(directory)
    assert printed.returncode == 2, printed.stderr
    assert str(directory / "body.md.j2") in printed.stderr
    assert "line 2" in printed.stderr and printed.stderr.count("\n") == 1
    assert printed.stdout == ""


def test_a_fifo_named_like_a_template_is_refused_not_waited_on(tmp_path: Path) -> None:
    directory = templates(tmp_path)
    os.mkfifo(directory / "title.j2")
    printed = render(directory)
    assert printed.returncode == 2, printed.stderr
    assert "title.j2" in printed.stderr and "not a regular file" in printed.stderr


def test_a_dangling_template_link_is_named(tmp_path: Path) -> None:
    directory = templates(tmp_path)
    (directory / "body.md.j2").symlink_to(tmp_path / "nowhere.j2")
    printed = render(directory)
    assert printed.returncode == 2, printed.stderr
    assert "body.md.j2" in printed.stderr and printed.stderr.count("\n") == 1


# Each builds 100 MB (or a number of ten million digits) in one C call: before, the start
# allocated it and went on; a 10**10 variant would have taken the process down.
@pytest.mark.parametrize("expression", [
    "('x' * 10**8)|length",
    "(['x'] * 10**8)|length",
    "''|center(10**8)|length",
    "''.center(10**8)|length",
    "''.zfill(10**8)|length",
    "'{:>100000000}'.format(1)|length",
    "('%0100000000d' % 1)|length",
    "('%0100000000d'|format(1))|length",
    "(3 ** 10000000) > 1",  # Jinja reads 3 ** 10 ** 7 as (3 ** 10) ** 7
])
def test_a_template_cannot_build_a_huge_value(tmp_path: Path, expression: str) -> None:
    directory = templates(tmp_path, **{"body.md.j2": "{{ " + expression + " }}\n"})
    with pytest.raises(StartupError, match="too large for a template"):
        load_renderer(directory)


def test_a_template_printing_100_mb_is_cut_to_the_body_limit(tmp_path: Path) -> None:
    directory = templates(tmp_path, **{
        "body.md.j2": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"})
    printed = render(directory)
    assert printed.returncode == 0, printed.stderr
    assert len(printed.stdout) <= 65_536 + 1_000
    assert printed.stdout.rstrip().endswith("<!-- obsv:sentry-issue=1117540176 -->")


def test_ordinary_template_text_with_long_numbers_still_renders(tmp_path: Path) -> None:
    """The bounds refuse sizes, not digits: an id of ten digits passes through filters."""
    directory = templates(tmp_path, **{
        "body.md.j2": "{{ sentry_issue_id|string|replace('1', 'one') }} "
                      "{{ '%s-%d'|format('a', 1234567890) }} {{ 'id {}'.format(1117540176) }}"
                      " {{ 'ab' * 3 }} {{ 2 ** 10 }}\n"})
    printed = render(directory)
    assert printed.returncode == 0, printed.stderr
    assert "oneoneone7540one76" in printed.stdout
    assert "a-1234567890 id 1117540176 ababab 1024" in printed.stdout


async def test_a_template_that_hangs_on_one_event_fails_that_alert_not_the_service(
        tmp_path: Path) -> None:
    """The sample renders (the start succeeds); a fatal event would loop for hours. That
    alert fails for good (``issue.failed``, not retryable), and the service goes on: the
    next alert gets its outbox file."""
    directory = templates(tmp_path, **{
        "body.md.j2": "{% if level == 'fatal' %}" + NESTED + "{% endif %}{{ builtin_body }}\n"})
    log_path = tmp_path / "events.jsonl"
    outbox = tmp_path / "outbox"
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(log_path),
                                     "OBSV_OUTBOX_DIR": str(outbox),
                                     "OBSV_TEMPLATE_DIR": str(directory)})
    await server.start()
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for event_id, level, issue_id in (("a" * 32, "fatal", "111"),
                                              ("b" * 32, "error", "222")):
                raw = sentry_bytes(alert_body(event_id=event_id, level=level,
                                              issue_id=issue_id, hashes=["h" + issue_id]))
                async with session.post(server.url + "/webhooks/sentry", data=raw,
                                        headers=signed_headers(raw)) as answer:
                    assert answer.status == 202
            for _ in range(300):  # at most 30 s: the render stops after 2
                if (outbox / "222.md").exists():
                    break
                async with session.get(server.url + "/healthz") as health:
                    assert health.status == 200
                await _sleep(0.1)
        assert (outbox / "222.md").exists()
        assert not (outbox / "111.md").exists()
        [failed] = records_of(log_path, "issue.failed")
        assert failed["retryable"] is False and "cannot render" in failed["error"]
    finally:
        server.stop()


async def _sleep(seconds: float) -> None:
    import asyncio
    await asyncio.sleep(seconds)
