"""The one place that configures structlog.

JSON lines when stderr is not a terminal (what a log shipper wants), colours on a
terminal. Per-delivery context (request id, resource, seq) is bound with
contextvars by the handlers. Values of keys that look like credentials are
replaced before rendering, as a second line of defence: no code path passes a
secret to a logger on purpose.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

_SENSITIVE = ("secret", "token", "password", "authorization", "private_key", "signature")
_checked: dict[str, bool] = {}


def _is_sensitive(key: str) -> bool:
    # Log keys are a small fixed set, so the substring scan is done once per key.
    verdict = _checked.get(key)
    if verdict is None:
        verdict = _checked[key] = any(word in key.lower() for word in _SENSITIVE)
    return verdict


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Replace the value of any key that names a credential."""
    for key in event_dict:
        if _is_sensitive(key):
            event_dict[key] = "<redacted>"
    return event_dict


def _json_bytes(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def _json_text(value: Any, **_: Any) -> str:
    return _json_bytes(value).decode()


_LEVEL_METHODS = ("msg", "log", "debug", "info", "warn", "warning", "err", "error",
                  "exception", "critical", "fatal", "failure")


def _never_raising(logger_class: type[Any]) -> type[Any]:
    """A logger whose writes never raise: a closed or full stderr (a log shipper gone,
    a pipe closed) must not turn an accepted delivery into a 500."""

    def msg(self: Any, message: Any) -> None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: a closed file
            logger_class.msg(self, message)

    methods: dict[str, Any] = dict.fromkeys(_LEVEL_METHODS, msg)
    return type(f"Safe{logger_class.__name__}", (logger_class,), methods)


_SafeBytesLogger = _never_raising(structlog.BytesLogger)
_SafePrintLogger = _never_raising(structlog.PrintLogger)


def configure(log_format: str, stream: TextIO | None = None, level: int = logging.INFO,
              *, cache: bool = True) -> None:
    """Configure structlog once for the process (called by the CLI only; tests pass
    ``cache=False`` so that ``structlog.testing.capture_logs`` sees every line)."""
    stream = stream or sys.stderr
    binary = getattr(stream, "buffer", None)
    renderer: Any
    factory: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
        factory = lambda *_: _SafePrintLogger(stream)  # noqa: E731
    elif binary is not None:
        # structlog's fast path: orjson bytes straight to the binary stream.
        renderer = structlog.processors.JSONRenderer(serializer=_json_bytes)
        factory = lambda *_: _SafeBytesLogger(binary)  # noqa: E731
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_text)
        factory = lambda *_: _SafePrintLogger(stream)  # noqa: E731
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
