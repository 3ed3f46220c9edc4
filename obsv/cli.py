"""The ``obsv`` command line: serve, replay, why, export, import, send-test.

Exit codes: 0 ok, 1 a finding (a mismatch, a failed check), 2 a usage or
configuration error, printed as one line that names the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from obsv import __version__, streams
from obsv.errors import StartupError, UsageError
from obsv.settings import ConfigError, Settings, load_settings

# The server stack (asyncio, aiohttp, structlog, the event log) is imported by the
# subcommands that use it: `obsv replay` and `obsv why` start without it (issue 12).
if TYPE_CHECKING:
    from obsv.eventlog import LogCorrupt, LogInUse


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="obsv",
        description="Turn Sentry error alerts into GitHub issues, through a durable event log.",
    )
    parser.add_argument("--version", action="version", version=f"obsv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the webhook service",
                                description="Run the webhook service until SIGINT or SIGTERM.")
    serve.add_argument("--config", metavar="PATH",
                       help="TOML settings file (default: $OBSV_CONFIG, else built-in defaults)")

    replay = commands.add_parser(
        "replay", help="audit a log offline: one row per alert",
        description="Fold an event log offline (never contacting GitHub) and print one row "
                    "per alert: its decision, reason and GitHub issue. Exit 0 for a complete "
                    "answer, 1 when something is named on stderr (a seq gap, a decision "
                    "that differs), 2 when a line of the log is not a record.")
    replay.add_argument("log", nargs="?", metavar="LOG",
                        help="the event log (default: the configured OBSV_EVENT_LOG)")
    replay.add_argument("--config", metavar="PATH", help="settings file (for LOG and --policy)")
    replay.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    replay.add_argument("--verify", action="store_true",
                        help="check integrity and re-derive every decision; exit 1 on any "
                             "mismatch")
    replay.add_argument("--policy", choices=("recorded", "current"), default="recorded",
                        help="decide with the policies recorded in the log (default) or with "
                             "today's settings; exit 1 when any decision differs from the "
                             "recorded one")
    replay.add_argument("--head", metavar="SEQ:HASH",
                        help="with --verify: check the log still holds this line (a head "
                             "kept elsewhere: a log.checkpoint's, or a snapshot's)")
    replay.add_argument("--secret", metavar="S",
                        help="with --verify: re-check every stored body against its "
                             "signature with this webhook secret (default: the configured "
                             "OBSV_SENTRY_CLIENT_SECRET)")
    replay.add_argument("--issue", metavar="ID", help="only alerts of this Sentry issue id")
    replay.add_argument("--since", metavar="TIME",
                        help="only alerts at or after TIME: RFC 3339 (2026-11-27T08:00:00Z), "
                             "a date, or a duration ago (90m, 6h, 2d)")

    why = commands.add_parser(
        "why", help="the timeline of one Sentry issue",
        description="Every alert of one Sentry issue, each decision with its reason, each "
                    "GitHub outcome, and what would happen to another alert now.")
    why.add_argument("sentry_issue_id", metavar="SENTRY_ISSUE_ID")
    why.add_argument("--log", metavar="LOG", help="the event log (default: the configured one)")
    why.add_argument("--config", metavar="PATH", help="settings file (for the default log)")
    for command in (replay, why):
        command.add_argument("--database-url", metavar="URL",
                             help="read the log from PostgreSQL (default: OBSV_DATABASE_URL "
                                  "when no LOG is given)")

    export = commands.add_parser(
        "export", help="write a PostgreSQL log as JSONL to standard output",
        description="Write the event log held in PostgreSQL to standard output as JSONL, "
                    "line for line what a JSONL log would hold (chain included).")
    export.add_argument("--database-url", metavar="URL",
                        help="the database (default: OBSV_DATABASE_URL)")
    export.add_argument("--since-seq", metavar="N", type=int, default=0,
                        help="only the records after seq N")
    export.add_argument("--config", metavar="PATH", help="settings file (for the database)")
    load = commands.add_parser(
        "import", help="load a JSONL log into an empty PostgreSQL database",
        description="Load a JSONL event log into an empty database, checking its seqs and "
                    "its chain as it goes; nothing is loaded when any line is refused.")
    load.add_argument("file", metavar="FILE", help="the JSONL event log")
    load.add_argument("--database-url", metavar="URL",
                      help="the database (default: OBSV_DATABASE_URL)")
    load.add_argument("--config", metavar="PATH", help="settings file (for the database)")

    send = commands.add_parser(
        "send-test", help="send a signed sample alert to a running server",
        description="Sign and send a sample delivery (an event_alert unless --resource "
                    "says otherwise) to a running obsv and print the answer: the setup "
                    "check for the URL and the shared secret.")
    send.add_argument("--config", metavar="PATH", help="settings file giving URL and secret")
    send.add_argument("--url", help="server base URL (default: from the settings' host/port)")
    send.add_argument("--secret", help="client secret (default: from the settings)")
    send.add_argument("--payload", metavar="FILE",
                      help="JSON body to send as is (default: Sentry's documented sample "
                           "of the resource, an event_alert with a fresh event_id, so it is "
                           "never a duplicate)")
    send.add_argument("--resource", metavar="NAME", default="event_alert",
                      help="the Sentry-Hook-Resource to send (default: event_alert); with a "
                           "sample for event_alert, issue, error, installation, comment, "
                           "metric_alert")

    render = commands.add_parser(
        "render", help="print the issue (or comment) obsv would post for a payload",
        description="Render a Sentry event_alert payload as obsv would post it, with the "
                    "configured templates and redaction: the title and body of the issue, "
                    "or with --comment the recurrence comment. Reads no log (so 'first "
                    "seen' is this event's time) and contacts nobody: the way to preview "
                    "templates.")
    render.add_argument("--config", metavar="PATH",
                        help="settings file (for OBSV_TEMPLATE_DIR, OBSV_REDACT_PII, labels)")
    render.add_argument("--payload", metavar="FILE",
                        help="an event_alert body (default: Sentry's documented sample)")
    render.add_argument("--comment", action="store_true",
                        help="print the recurrence comment instead of the issue")

    from obsv.silencecli import add_parser as add_silence_parser
    add_silence_parser(commands)
    return parser


def entry() -> NoReturn:
    """The ``obsv`` command: ``main`` in a process of its own, which a replay may end
    as soon as its answer is printed (``auditcli.run``)."""
    sys.stderr = streams.message_stream(sys.stderr)
    raise SystemExit(main(exit_when_done=True))


def main(argv: Sequence[str] | None = None, *, exit_when_done: bool = False) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args: argparse.Namespace | None = None
    with streams.answer_stdout() as answer:
        try:
            try:
                args = parser.parse_args(argv)  # may print --help
            except SystemExit:
                sys.stdout.flush()  # --help's text is an answer too
                raise
            code = _run(parser, args, exit_when_done)
            sys.stdout.flush()  # here, so a closed stdout is seen inside the try
        except BrokenPipeError:
            return streams.stdout_gone()
        except OSError as exc:
            if answer is None or not streams.answer_failed(answer, exc):
                raise  # not the answer's: a bug to see whole, not to call a full disk
            return streams.stdout_unwritable(answer, exc, done=_carried_out(args))
    return code


def _carried_out(args: argparse.Namespace | None) -> str | None:
    """What the command has changed by the time it prints its answer (each of these
    prints only after acting, and says a failure on stderr instead): told when the
    answer is lost, so that nobody retries what was done (a second silence)."""
    if args is None:
        return None
    if args.command == "silence":
        return {"add": "the silence was added",
                "expire": "the silence was expired"}.get(args.silence_command)
    return {"import": "the records were imported",
            "send-test": "the delivery was sent"}.get(args.command)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace,
         exit_when_done: bool) -> int:
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command in ("replay", "why"):
            from obsv import auditcli
            return auditcli.run(args, exit_when_done=exit_when_done)
        if args.command in ("export", "import"):
            from obsv import pgtools
            return (pgtools.export_command if args.command == "export"
                    else pgtools.import_command)(args)
        if args.command == "send-test":
            from obsv.sendtest import send_test
            return send_test(args)
        if args.command == "silence":
            from obsv.silencecli import run as run_silence
            return run_silence(args)
        if args.command == "render":
            from obsv.preview import render_command
            return render_command(args)
    except (ConfigError, UsageError, StartupError) as exc:
        print(f"obsv: {exc}", file=sys.stderr)
        return 2
    except _log_errors() as exc:
        if isinstance(exc, _log_errors()[0]):
            print(f"obsv: {exc}", file=sys.stderr)
        else:
            print(f"obsv: {exc}; inspect that line (obsv replay --verify) before serving",
                  file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _log_errors() -> tuple[type[LogInUse], type[LogCorrupt]]:
    """The event log's errors, imported only once something is raised: a command that
    never opened the log cannot raise them (and does not load the log's module)."""
    from obsv.eventlog import LogCorrupt, LogInUse
    return LogInUse, LogCorrupt


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings for a subcommand that takes ``--config``."""
    return load_settings(args.config, os.environ, stderr_is_tty=sys.stderr.isatty())


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from obsv.logs import configure
    from obsv.runtime import tune_collector

    settings = settings_from(args)
    # Python's own stderr, not entry()'s message stream: the log's writes never raise
    # already (obsv/logs.py), and a line per delivery should not pay a Python-level
    # write on the way (0.1-0.2 µs; more under PYTHONUNBUFFERED).
    configure(settings.log_format, stream=sys.__stderr__ or sys.stderr)
    tune_collector()
    return asyncio.run(_run_server(settings))


async def _run_server(settings: Settings) -> int:
    # Imported here: the offline commands (replay, why) start faster without aiohttp.
    import asyncio

    import structlog
    from aiohttp import web

    from obsv.httpserver import GuardedSite
    from obsv.runtime import freeze_once_ready
    from obsv.server import STARTUP, create_app

    log = structlog.get_logger("obsv.cli")
    timeout = settings.request_timeout_seconds
    # In-flight requests get 10 s to finish on shutdown (they only wait for an fsync).
    # An idle keep-alive connection, or an unread body after the answer, is held no
    # longer than a slow request would be (obsv.httpserver has the other deadlines).
    runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None,
                           shutdown_timeout=10, keepalive_timeout=timeout,
                           lingering_time=min(2, timeout))
    try:
        await runner.setup()  # opens the log (and the sink) before anything listens
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the reason to report is exc, not this
            await runner.cleanup()  # what did start (a GitHub session) closes quietly
        if isinstance(exc, OSError):
            raise StartupError(_cannot_open(exc, settings)) from None
        raise
    try:
        site = GuardedSite(runner, settings.host, settings.port, timeout=timeout)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                "set OBSV_PORT or OBSV_HOST to a free address") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        log.info("serving", url=f"http://{settings.host}:{settings.port}",
                 event_log=str(settings.event_log), dry_run=settings.dry_run,
                 max_connections=site.max_connections, request_timeout_seconds=timeout)
        startup = runner.app[STARTUP]
        startup.add_done_callback(freeze_once_ready)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopping, startup], return_when=asyncio.FIRST_COMPLETED)
        if startup.done() and not startup.cancelled() and startup.exception() is not None:
            stopping.cancel()
            raise startup.exception()  # type: ignore[misc]
        await stopping
        log.info("stopping")
    finally:
        await runner.cleanup()
    return 0


def _cannot_open(exc: OSError, settings: Settings) -> str:
    """One line for a file obsv could not open or write at start: which path, for which
    setting, what is wrong, and the fix."""
    configured = settings.event_log
    setting = "OBSV_EVENT_LOG"
    if exc.filename and Path(exc.filename).is_relative_to(settings.outbox_dir):
        configured, setting = settings.outbox_dir, "OBSV_OUTBOX_DIR"
    # os.write and fsync name no file: the log (or its torn tail's side file) it was.
    where = Path(exc.filename) if exc.filename else configured
    problem, fix = exc.strerror or str(exc), f"point {setting} at a writable location"
    blocking = _file_on_the_way(where)
    if (exc.errno in (errno.EEXIST, errno.ENOTDIR) and blocking is not None
            and blocking != configured and configured.is_relative_to(blocking)):
        where, problem = blocking, "it is a file, not a directory"
    elif exc.errno == errno.EISDIR:
        problem = "it is a directory, not a file"
        fix = f"set {setting} to a file inside it, e.g. {where / configured.name}"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = ("free space on that disk, then start again (a torn last line is copied "
               "beside the log before serving)")
    shown = "" if where == configured else f" ({configured})"
    return f"cannot use {where} for {setting}{shown}: {problem}; {fix}"


def _file_on_the_way(path: Path) -> Path | None:
    """The first component of ``path`` that exists and is not a directory, if any."""
    for part in (*reversed(path.parents), path):
        if part.exists() and not part.is_dir():
            return part
    return None
