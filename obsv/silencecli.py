"""``obsv silence add|list|expire``: the admin API (docs/reference.md §9) from a terminal.

URL and token come from the same configuration as ``serve`` (``OBSV_ADMIN_URL``, else
``http://HOST:PORT``; ``OBSV_ADMIN_TOKEN``). Exit 0 on success, 1 when the server
answers an error or cannot be reached, 2 for usage or configuration, each error one line.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any
from urllib.parse import quote

from obsv.auditcli import printable
from obsv.errors import UsageError
from obsv.settings import Settings, load_settings

_TIMEOUT_SECONDS = 10
_ANY_ADDRESS = {"0.0.0.0", "::", ""}


class ApiError(Exception):
    """The server answered an error, or did not answer; one line."""


def add_parser(commands: Any) -> None:
    """The ``silence`` subcommand and its three actions."""
    silence = commands.add_parser(
        "silence", help="add, list or expire silences on the running server",
        description="Manage silences through the running server's admin API "
                    "(OBSV_ADMIN_TOKEN; URL from OBSV_ADMIN_URL, else host and port).")
    actions = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION",
                                     parser_class=type(silence))
    add = actions.add_parser("add", help="mute alerts matching every MATCHER for a while")
    add.add_argument("matchers", nargs="+", metavar="MATCHER",
                     help="NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX; NAME one of "
                          "sentry_issue_id, project, environment, level, title, culprit, "
                          "release, tag:NAME")
    add.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                     help="how long: 30m, 24h, 7d")
    add.add_argument("--comment", help="why (default: 'silenced with obsv silence add')")
    add.add_argument("--by", help="who (default: your login name)")
    listing = actions.add_parser("list", help="the silences the server knows")
    listing.add_argument("--json", action="store_true", help="print the server's JSON")
    expire = actions.add_parser("expire", help="end a silence now")
    expire.add_argument("id", metavar="ID")
    expire.add_argument("--by", help="who (default: your login name)")
    for parser in (add, listing, expire):
        parser.add_argument("--config", metavar="PATH", help="settings file (URL and token)")


def run(args: argparse.Namespace) -> int:
    """Run one ``obsv silence`` action."""
    import asyncio  # here: `obsv replay` builds this parser and should not load asyncio

    settings = load_settings(args.config, os.environ, require_secret=False)
    url, token = admin_url(settings), settings.admin_token
    if not token:
        raise UsageError("OBSV_ADMIN_TOKEN is not set: set it (or admin_token in the config "
                         "file) to the server's admin token")
    try:
        if args.silence_command == "add":
            body = {"matchers": args.matchers, "duration": args.duration,
                    "comment": args.comment or "silenced with obsv silence add",
                    "created_by": args.by or _login()}
            answer = asyncio.run(_call("POST", f"{url}/api/silences", token, body))
            print(f"added silence {answer['id']}")
            return 0
        if args.silence_command == "list":
            answer = asyncio.run(_call("GET", f"{url}/api/silences", token))
            if args.json:
                import json
                print(json.dumps(answer, indent=2))
            else:
                print_table(answer.get("silences", []))
            return 0
        by = quote(args.by or _login(), safe="")
        answer = asyncio.run(_call("DELETE", f"{url}/api/silences/{quote(args.id, safe='')}"
                                   f"?by={by}", token))
        print(f"expired silence {answer['id']} at {answer.get('expired_at')}")
        return 0
    except ApiError as exc:
        print(f"obsv silence: {exc}", file=sys.stderr)
        return 1


def admin_url(settings: Settings) -> str:
    """Where the admin API is: ``OBSV_ADMIN_URL``, else the address ``serve`` listens on."""
    if settings.admin_url:
        return settings.admin_url
    host = "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}"


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


async def _call(method: str, url: str, token: str, body: Any = None) -> dict[str, Any]:
    import aiohttp  # here: `obsv replay` builds this parser and should not load aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_TIMEOUT_SECONDS)) as session, \
                session.request(method, url, json=body, headers=headers) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise ApiError(f"{method} {url} answered {response.status} without a JSON "
                               "object; is OBSV_ADMIN_URL an obsv server?")
            if response.status >= 300:
                raise ApiError(_problem(response.status, answer))
            return answer
    except aiohttp.ClientConnectorError as exc:
        raise ApiError(f"nothing answers at {url} ({exc.os_error.strerror or exc}); start "
                       "the server or set OBSV_ADMIN_URL") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(f"{method} {url} failed: {exc!r}") from None


def _problem(status: int, answer: dict[str, Any]) -> str:
    error = answer.get("error", "error")
    if status == 401:
        return "401 unauthorized: OBSV_ADMIN_TOKEN differs from the server's"
    if status == 404 and error == "not_found":
        return "404: the server has no admin API; set OBSV_ADMIN_TOKEN where it runs"
    field = answer.get("field")
    message = answer.get("message") or answer.get("detail") or answer.get("id") or ""
    return f"{status} {error}" + (f": {field}" if field else "") + (
        f": {message}" if message else "")


def print_table(silences: list[dict[str, Any]]) -> None:
    """The silences, one per row; the comment last, as it is the longest."""
    if not silences:
        print("no silences")
        return
    table = [["ID", "STATE", "ENDS (UTC)", "BY", "MATCHERS", "COMMENT"]]
    for s in silences:
        state = "active" if s.get("active") else ("expired" if s.get("expired_at") else
                                                   "pending")
        table.append([str(s.get("id")), state, str(s.get("ends_at", ""))[:19].replace("T", " "),
                      str(s.get("created_by")), " ".join(s.get("matchers", [])),
                      str(s.get("comment", ""))])
    table = [[printable(cell) for cell in row] for row in table]  # the server's text
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
