"""The dry-run outbox: one safe file per Sentry issue, permanent failures recorded as
such, and an unusable outbox refused at startup (docs/reference.md §6, Dry run)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.alert import alert_from_delivery
from obsv.core.events import AlertReceived, Delivery, IssueFailed, IssueOpened
from obsv.sink import DryRunSink, OpenJob, outbox_name

from .conftest import (
    SECRET,
    ClientFactory,
    alert_body,
    fill,
    post_signed,
    records_of,
    sentry_bytes,
    wait_until,
)
from .hostile import deep_breadcrumb_body
from .process import ServeProcess

AT = datetime.now(UTC)


def job(issue_id: str = "1117540176", seq: int = 7) -> OpenJob:
    body = alert_body(issue_id=issue_id)
    received = AlertReceived(Delivery("r", "event_alert", None, "s"), alert_from_delivery(body),
                             sentry_bytes(body).decode())
    return OpenJob(seq, AT, received, ("agent:builder",), 0, False)


# -- item 6: one file per Sentry issue ---------------------------------------------

@pytest.mark.parametrize("ids", [
    ("a/b", "a_b"),
    (".hidden", "hidden"),
    ("x" * 130 + "1", "x" * 130 + "2"),
    ("Checkout", "checkout"),
    ("web:checkout", "web/checkout", "web?checkout", "web_checkout"),
])
def test_similar_ids_get_different_files(ids: tuple[str, ...]) -> None:
    names = [outbox_name(i) for i in ids]
    assert len({n.lower() for n in names}) == len(ids), names


def test_a_numeric_id_keeps_its_file_name() -> None:
    assert outbox_name("1117540176") == "1117540176.md"


def safe_component(name: str) -> bool:
    return (0 < len(name.encode()) <= 100 and not name.startswith((".", "-"))
            and name.endswith(".md") and name.isascii()
            and all(c.isalnum() or c in "-_." for c in name)
            and unicodedata.normalize("NFC", name) == name)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=200) | st.from_regex(r"[0-9]{1,80}", fullmatch=True),
                unique=True, max_size=8))
def test_outbox_names_are_injective_and_safe(ids: list[str]) -> None:
    names = [outbox_name(i) for i in ids]
    assert len({n.lower() for n in names}) == len(ids)  # even on a case-insensitive disk
    assert all(safe_component(n) for n in names), names
    for sentry_id, name in zip(ids, names, strict=True):
        if sentry_id.isascii() and sentry_id.isdigit() and len(sentry_id) <= 64:
            assert name == f"{sentry_id}.md"


# -- item 5: nothing retried forever ----------------------------------------------

async def test_a_deep_breadcrumb_and_a_long_cjk_id_each_get_one_file(
        make_client: ClientFactory, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    client = await make_client(outbox_dir=outbox)
    deep = await post_signed(client, deep_breadcrumb_body("a" * 32))
    cjk = await post_signed(client, alert_body(event_id="b" * 32, issue_id="漢" * 100,
                                               hashes=["h2"]))
    assert (deep.status, cjk.status) == (202, 202)
    seqs = {(await deep.json())["seq"], (await cjk.json())["seq"]}
    log = tmp_path / "var" / "events.jsonl"

    def outcomes() -> list[dict[str, object]]:
        return records_of(log, "issue.opened") + records_of(log, "issue.failed")

    await wait_until(lambda: {r["alert_seq"] for r in outcomes()} == seqs)
    assert records_of(log, "issue.failed") == []
    files = sorted(outbox.glob("*.md"))
    assert len(files) == 2
    assert sorted(r["url"] for r in records_of(log, "issue.opened")) == [str(f) for f in files]


async def test_a_directory_in_the_way_is_a_recorded_permanent_failure(
        make_client: ClientFactory, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    (outbox / "1117540176.md").mkdir(parents=True)
    client = await make_client(outbox_dir=outbox)
    response = await post_signed(client, alert_body(event_id="a" * 32))
    seq = (await response.json())["seq"]
    log = tmp_path / "var" / "events.jsonl"
    await wait_until(lambda: records_of(log, "issue.failed") != [])
    [failed] = records_of(log, "issue.failed")
    assert (failed["alert_seq"], failed["retryable"], failed["next_attempt_at"]) == (
        seq, False, None)
    assert "outbox" in str(failed["error"])


async def test_a_name_too_long_for_the_filesystem_is_permanent(tmp_path: Path) -> None:
    # PATH_MAX is 4096 on Linux: the directory (and the start's probe) fit, the file
    # (a 40-character slug and a hash: 80 bytes with ".tmp") does not.
    outbox = tmp_path
    while len(str(outbox)) < 4040:
        outbox = outbox / ("d" * min(200, 4040 - len(str(outbox)) - 1))
    sink = DryRunSink(outbox, None, lambda: AT)
    await sink.start()
    outcome = await sink.open_issue(job("w" * 100))
    assert isinstance(outcome, IssueFailed)
    assert (outcome.retryable, outcome.next_attempt_at) == (False, None)


async def test_a_full_disk_stays_retryable(tiny_disk: Path) -> None:
    sink = DryRunSink(tiny_disk / "outbox", None, lambda: AT)
    await sink.start()
    filler = fill(tiny_disk, 0)  # every write from now on: ENOSPC
    outcome = await sink.open_issue(job())
    assert isinstance(outcome, IssueFailed)
    assert outcome.retryable is True and outcome.next_attempt_at is not None
    assert "No space left" in outcome.error
    filler.unlink()
    assert isinstance(await sink.open_issue(job()), IssueOpened)


# -- startup: an unusable outbox is refused before listening ---------------------

@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
async def test_an_unwritable_outbox_exits_2_with_one_line(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    outbox = blocker / "outbox" if where == "under_a_file" else blocker
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(tmp_path / "events.jsonl"),
                                     "OBSV_OUTBOX_DIR": str(outbox)})
    try:
        with pytest.raises(RuntimeError, match="exited"):
            await server.start()
    finally:
        assert server.proc is not None
        if server.proc.poll() is None:
            server.stop()
    assert server.proc.returncode == 2
    lines = server.stderr_path.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"obsv: outbox directory {outbox}")
    assert "OBSV_OUTBOX_DIR" in lines[0]
