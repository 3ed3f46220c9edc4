"""Slow and numerous clients against a real `obsv serve`, over real sockets.

A client that never finishes its request head, or trickles its body, is cut after
OBSV_REQUEST_TIMEOUT_SECONDS; more connections than the process has descriptors wait
for a free slot instead of exhausting them. Meanwhile a signed delivery and /healthz
are answered. Every wait here is bounded; no timing is asserted beyond a generous
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from .conftest import SECRET, alert_body, deliveries, sentry_bytes, signed_headers
from .process import ServeProcess, free_port

TIMEOUT_SECONDS = 1  # OBSV_REQUEST_TIMEOUT_SECONDS of the server under test
DEADLINE = 30.0  # how long the test waits for anything, far above what it should take

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def serve(tmp_path: Path, preexec_fn: Callable[[], None] | None = None) -> ServeProcess:
    return ServeProcess(tmp_path, {
        "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_EVENT_LOG": str(tmp_path / "events.jsonl"),
        "OBSV_OUTBOX_DIR": str(tmp_path / "outbox"),
        "OBSV_REQUEST_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS)}, preexec_fn=preexec_fn)


@contextlib.asynccontextmanager
async def running(server: ServeProcess) -> AsyncIterator[ServeProcess]:
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def connect(port: int) -> Stream:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), DEADLINE)


async def half_sent_head(port: int) -> Stream:
    """A request line and part of the headers, then nothing."""
    reader, writer = await connect(port)
    writer.write(b"POST /webhooks/sentry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
    await writer.drain()
    return reader, writer


async def slow_body(port: int, *, trickle: bool) -> tuple[Stream, asyncio.Task[None]]:
    """A whole, signed head announcing 100 kB and 10 bytes of body; then nothing more
    (a stalled body) or one byte every 0.2 s (a trickled one)."""
    reader, writer = await connect(port)
    raw = b"x" * 100_000
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(raw).items())
    writer.write(f"POST /webhooks/sentry HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                 f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw[:10])

    async def more() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(int(DEADLINE / 0.2) if trickle else 0):  # bounded
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
    return (reader, writer), asyncio.create_task(more())


async def until_closed(stream: Stream) -> bytes:
    """Everything the server sends until it closes the connection (a reset or a broken
    pipe, when it closes with the client's bytes unread or still coming, ends it too)."""
    reader, writer = stream
    received = b""
    try:
        async with asyncio.timeout(DEADLINE):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass
    finally:
        writer.close()
    return received


async def signed_delivery(url: str, event_id: str) -> tuple[int, object]:
    """(status, the answer's "status" field) of one signed event_alert."""
    raw = sentry_bytes(alert_body(event_id=event_id))
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            url + "/webhooks/sentry", data=raw, headers=signed_headers(raw)) as response:
        return response.status, (await response.json()).get("status")


async def healthz(url: str) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as session, \
            session.get(url + "/healthz") as response:
        return response.status


async def test_slow_clients_are_cut_while_deliveries_are_answered(tmp_path: Path) -> None:
    async with running(serve(tmp_path)) as server:
        heads = [await half_sent_head(server.port) for _ in range(20)]
        stalled = [await slow_body(server.port, trickle=False) for _ in range(10)]
        trickled = [await slow_body(server.port, trickle=True) for _ in range(10)]

        assert await signed_delivery(server.url, "a" * 32) == (202, "accepted")
        assert await healthz(server.url) == 200

        for stream in heads:
            assert await until_closed(stream) == b""  # closed, nothing answered
        for stream, _ in stalled:
            answer = await until_closed(stream)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert answer.endswith(b'{"error":"body_timeout"}')
        for stream, writing in trickled:
            # Closed by the server too. Whether the 408 is still read depends on the
            # client: a write of its own after the server closed can reset the socket
            # before the answer is read, which is how a trickling client ends.
            answer = await until_closed(stream)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            await asyncio.wait_for(writing, DEADLINE)  # it stopped: the server closed
        assert await signed_delivery(server.url, "b" * 32) == (202, "accepted")
    log = server.stderr_path.read_text()
    assert "Traceback" not in log
    assert [r["alert"]["event_id"] for r in deliveries(tmp_path / "events.jsonl")] == [
        "a" * 32, "b" * 32]  # nothing of the slow ones was recorded


async def keep_alive_delivery(stream: Stream, event_id: str, *, body_bytes: int | None = None
                              ) -> bytes:
    """One signed delivery on an open connection; its answer's status line. With
    ``body_bytes``, only that much of the body is sent, and nothing is read back."""
    reader, writer = stream
    raw = sentry_bytes(alert_body(event_id=event_id))
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(raw).items())
    writer.write(f"POST /webhooks/sentry HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                 f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw[:body_bytes])
    await writer.drain()
    if body_bytes is not None:
        return b""
    async with asyncio.timeout(DEADLINE):
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    return status


async def test_a_later_body_on_a_kept_alive_connection_has_its_own_deadline(
        tmp_path: Path) -> None:
    """Requests back to back on one connection for three times the timeout are all
    answered (none is cut by a deadline meant for an earlier one); then a request whose
    body stalls is cut with 408 once its own deadline passes."""
    async with running(serve(tmp_path)) as server:
        stream = await connect(server.port)
        loop = asyncio.get_running_loop()
        until, answered = loop.time() + 3 * TIMEOUT_SECONDS, 0
        while loop.time() < until:
            status = await keep_alive_delivery(stream, f"{answered:032x}")
            assert status.startswith(b"HTTP/1.1 202 "), status
            answered += 1
            await asyncio.sleep(0.05)
        await keep_alive_delivery(stream, "f" * 32, body_bytes=10)
        answer = await until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert answer.endswith(b'{"error":"body_timeout"}')
    recorded = [r["alert"]["event_id"] for r in deliveries(tmp_path / "events.jsonl")]
    assert recorded == [f"{n:032x}" for n in range(answered)]  # not the stalled one


def _delivery_bytes(event_id: str) -> tuple[bytes, bytes]:
    """The head and the body of one signed delivery."""
    raw = sentry_bytes(alert_body(event_id=event_id))
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(raw).items())
    return (f"POST /webhooks/sentry HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
            f"Content-Length: {len(raw)}\r\n\r\n".encode(), raw)


async def test_a_pipelined_request_whose_body_stalls_is_cut_and_the_first_answered(
        tmp_path: Path) -> None:
    """Two requests in one write, the second's body cut short: the first is answered
    202, the second 408 once its own deadline passes (the one timer is not spent on
    the first), on the same connection."""
    async with running(serve(tmp_path)) as server:
        reader, writer = await connect(server.port)
        first_head, first_body = _delivery_bytes("a" * 32)
        second_head, second_body = _delivery_bytes("b" * 32)
        writer.write(first_head + first_body + second_head + second_body[:10])
        await writer.drain()
        answers = await until_closed((reader, writer))
    first, cut, second = answers.partition(b"HTTP/1.1 408 ")
    assert first.startswith(b"HTTP/1.1 202 ") and first.count(b"HTTP/1.1 ") == 1, answers
    assert cut and second.endswith(b'{"error":"body_timeout"}'), answers
    assert [r["alert"]["event_id"] for r in deliveries(tmp_path / "events.jsonl")] == [
        "a" * 32]


async def test_a_body_that_arrives_in_time_is_not_cut_by_the_head_deadline(
        tmp_path: Path) -> None:
    """A head sent late in its wait and a body sent in two halves that end after the
    connection's first deadline but within the body's own: answered 202, not 408."""
    async with running(serve(tmp_path)) as server:
        reader, writer = await connect(server.port)
        head, body = _delivery_bytes("c" * 32)
        await asyncio.sleep(TIMEOUT_SECONDS * 0.6)
        writer.write(head + body[:10])
        await writer.drain()
        await asyncio.sleep(TIMEOUT_SECONDS * 0.6)  # past the connection's first deadline
        writer.write(body[10:])
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            status = await reader.readline()
        writer.close()
    assert status.startswith(b"HTTP/1.1 202 "), status


def few_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


async def test_more_connections_than_descriptors_wait_their_turn(tmp_path: Path) -> None:
    async with running(serve(tmp_path, preexec_fn=few_descriptors)) as server:
        # More than the child can hold open; the ones it cannot take yet wait in its
        # listen backlog (128), so each connect here completes.
        heads = [await half_sent_head(server.port) for _ in range(150)]

        assert await signed_delivery(server.url, "c" * 32) == (202, "accepted")
        assert await healthz(server.url) == 200
        closed = await asyncio.gather(*(until_closed(stream) for stream in heads))
        assert closed == [b""] * len(heads)
    log = server.stderr_path.read_text()
    assert "Traceback" not in log
    exhausted = [line for line in log.splitlines()
                 if "out of system resource" in line or "accept.out_of_resources" in line
                 or "Too many open files" in line]
    assert len(exhausted) <= 3, exhausted[:5]


@pytest.mark.parametrize("value", ["0", "soon"])
def test_request_timeout_must_be_a_positive_number(value: str) -> None:
    from obsv.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="OBSV_REQUEST_TIMEOUT_SECONDS"):
        load_settings(None, {"OBSV_SENTRY_CLIENT_SECRET": "s",
                             "OBSV_REQUEST_TIMEOUT_SECONDS": value})


# A server on GuardedSite whose cap is set above what its descriptors allow, so that
# accept() really fails with EMFILE: the path the cap normally keeps it from.
OVERCOMMITTED_SERVER = """
import asyncio, resource, signal, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from aiohttp import web
from obsv.httpserver import GuardedSite
from obsv.logs import configure

async def healthz(request):
    return web.json_response({"status": "ok"})

async def main(port):
    configure("json")
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=1)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", port, timeout=1, max_connections=1000)
    await site.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("listening", flush=True)
    await stop.wait()
    await runner.cleanup()

asyncio.run(main(int(sys.argv[1])))
"""


async def test_accept_out_of_descriptors_is_logged_once_and_recovers(tmp_path: Path) -> None:
    port = free_port()
    stderr_path = tmp_path / "server.log"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", OVERCOMMITTED_SERVER, str(port)],
                                stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), DEADLINE)
        assert line == b"listening\n", stderr_path.read_text()
        heads = [await half_sent_head(port) for _ in range(100)]  # more than 64 descriptors

        assert await healthz(f"http://127.0.0.1:{port}") == 200
        closed = await asyncio.gather(*(until_closed(stream) for stream in heads))
        assert closed == [b""] * len(heads)
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
    log = stderr_path.read_text()
    exhausted = [json.loads(line) for line in log.splitlines()
                 if "accept.out_of_resources" in line]
    assert len(exhausted) == 1, log[-2000:]  # once a minute, and this took seconds
    assert exhausted[0]["errno"] == errno.EMFILE
    assert "Traceback" not in log and "out of system resource" not in log
