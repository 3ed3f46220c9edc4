"""``obsv send-test``: sign and send a sample delivery, as Sentry would, and explain the answer.

The samples in ``obsv/samples`` are Sentry's documented payloads, one per resource
(``event_alert.json``, ``issue.json`` ...); ``--resource`` picks one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from obsv.core.signature import sign
from obsv.errors import UsageError

WEBHOOK_PATH = "/webhooks/sentry"
EVENT_ALERT = "event_alert"
_RESOURCE_NAME = re.compile(r"^[a-z][a-z_]*$")  # how Sentry spells its resources


class SendTestError(Exception):
    """The check failed; the message says what to look at."""


def webhook_url(base: str) -> str:
    """The webhook URL for a server base URL (a full webhook URL is kept as is)."""
    base = base.rstrip("/")
    return base if base.endswith(WEBHOOK_PATH) else base + WEBHOOK_PATH


def sample_resources() -> list[str]:
    """The resources that have a sample body."""
    return sorted(entry.name.removesuffix(".json")
                  for entry in resources.files("obsv.samples").iterdir()
                  if entry.name.endswith(".json"))


def sample_body(payload: Path | None, resource: str = EVENT_ALERT) -> bytes:
    """The body to send: a file as is, or the resource's sample (an ``event_alert`` with
    a fresh ``event_id``, so it is never taken for a redelivery)."""
    if payload is not None:
        try:
            return payload.read_bytes()
        except OSError as exc:
            raise UsageError(f"--payload {payload}: {exc.strerror}") from None
    if resource not in sample_resources():
        raise UsageError(f"--resource {resource!r}: there is no sample for it; use one of "
                         f"{', '.join(sample_resources())}, or send your own with --payload "
                         "FILE")
    sample: dict[str, Any] = json.loads(
        resources.files("obsv.samples").joinpath(f"{resource}.json").read_text("utf-8"))
    if resource == EVENT_ALERT:
        sample["data"]["event"]["event_id"] = uuid.uuid4().hex
    # Sentry's own serialisation: compact separators, non-ASCII escaped.
    return json.dumps(sample, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def send_test(args: argparse.Namespace) -> int:
    """Run ``obsv send-test``; 0 on a 2xx answer, 1 otherwise."""
    from obsv.settings import ConfigError, load_settings

    if args.url is not None and args.secret is not None:
        url, secret = args.url, args.secret
    else:
        try:
            settings = load_settings(args.config, os.environ)
        except ConfigError:
            if args.secret is None:
                raise
            settings = None
        url = args.url or (f"http://{settings.host}:{settings.port}" if settings else "")
        secret = args.secret or (settings.sentry_client_secret if settings else "")
    resource = args.resource
    if not _RESOURCE_NAME.match(resource):
        raise UsageError(f"--resource {resource!r}: a Sentry resource name is lowercase "
                         f"letters and underscores; samples: {', '.join(sample_resources())}")
    body = sample_body(Path(args.payload) if args.payload else None, resource)
    try:
        status, text = asyncio.run(_post(webhook_url(url), secret, body, resource))
    except SendTestError as exc:
        print(f"send-test: {exc}", file=sys.stderr)
        return 1
    print(f"{status} {text}")
    return _explain(status, resource)


async def _post(url: str, secret: str, body: bytes, resource: str) -> tuple[int, str]:
    headers = {
        "Content-Type": "application/json",
        "Request-ID": uuid.uuid4().hex,
        "Sentry-Hook-Resource": resource,
        "Sentry-Hook-Timestamp": str(int(time.time())),
        "Sentry-Hook-Signature": sign(secret, body),
    }
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.post(url, data=body, headers=headers) as response:
            return response.status, (await response.text()).strip()
    except aiohttp.ClientConnectorError as exc:
        raise SendTestError(f"nothing answers at {url} ({exc.os_error.strerror or exc}); "
                            "start the server with `make run` or check --url") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SendTestError(f"request to {url} failed: {exc!r}") from None


def _explain(status: int, resource: str) -> int:
    if 200 <= status < 300 and resource == EVENT_ALERT:
        print("accepted: the alert is in the event log; see `obsv replay` and the outbox "
              "(dry run) or the GitHub repo", file=sys.stderr)
        return 0
    if 200 <= status < 300 and resource == "issue":
        print("recorded: the Sentry issue change is in the event log (sentry.issue); obsv "
              "folds it into its decisions (regressions, OBSV_CLOSE_ON_RESOLVE)", file=sys.stderr)
        return 0
    if 200 <= status < 300:
        print(f"recorded: the {resource} delivery is recorded in the event log; only "
              "event_alert deliveries open issues", file=sys.stderr)
        return 0
    hints = {
        401: "the server rejected the signature: the secret here differs from the server's "
             "OBSV_SENTRY_CLIENT_SECRET",
        413: "the payload is larger than the server's OBSV_MAX_BODY_BYTES",
        422: "the payload is not a usable event_alert (the answer names the fields)",
        503: "the server cannot write its event log (disk full or I/O error); see its logs",
    }
    print(f"send-test: {hints.get(status, f'unexpected answer {status}')}", file=sys.stderr)
    return 1
