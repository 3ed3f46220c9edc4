"""Errors the CLI turns into one line and exit 2: a leaf module, so any shell can raise them."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake of the caller's; printed as one line, exit 2."""


class StartupError(Exception):
    """Something found at start that makes serving impossible (an unusable log path, an
    unwritable outbox, a key that does not parse); the message is one line naming the fix.
    ``obsv serve`` prints it and exits 2 before it listens."""
