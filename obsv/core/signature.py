"""Sentry's webhook signature: lowercase hex HMAC-SHA256 of the raw body bytes.

Sentry signs the exact bytes it sends (compact JSON, non-ASCII as ``\\uXXXX``), so
the check runs on those bytes, before anything is parsed; re-serialising a parsed
body would change them and break the signature.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, body: bytes) -> str:
    """The ``Sentry-Hook-Signature`` Sentry would send for ``body``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def is_valid(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is the signature of ``body``, compared in constant time."""
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body).encode("ascii"),
                               signature.encode("utf-8", "replace"))
