"""X-Hub-Signature-256: HMAC-SHA256 of the raw request body with the Meta app's App Secret.

Meta signs the bytes it sends (with non-ASCII characters escaped as ``\\u00e4``); hash exactly those bytes,
never JSON re-serialised after parsing, or every message with an accent fails.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="


def sign(raw_body: bytes, app_secret: str) -> str:
    """The header value Meta would send for this body (tests and the benchmark sign with it)."""
    return PREFIX + hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()


def signature_valid(raw_body: bytes, header: str | None, app_secret: str) -> bool:
    """Constant-time check of the header against the body. False for a missing header, a header without the
    ``sha256=`` prefix, or an empty secret (an unconfigured secret must not verify anything)."""
    if not header or not app_secret or not header.startswith(PREFIX):
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    # Compare bytes: compare_digest on str refuses non-ASCII, and a forged header may contain anything.
    return hmac.compare_digest(
        expected.encode(), header[len(PREFIX) :].strip().lower().encode("utf-8", "replace")
    )


def signature_well_formed(header: str | None) -> bool:
    """Whether the header could be a signature at all (``sha256=`` and 64 hex digits): anything else is
    refused without hashing the body."""
    if not header or not header.startswith(PREFIX):
        return False
    digest = header[len(PREFIX) :].strip()
    return len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest)


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a verify token; an empty expected token matches nothing."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))
