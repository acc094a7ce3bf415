"""Signatures of deliveries, on Stripe's scheme (docs/webhooks.md, "Verifying a delivery").

``Bizagent-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``: the timestamp is
signed with the body, so a receiver that refuses old timestamps also refuses a replayed delivery.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Bizagent-Signature"
EVENT_ID_HEADER = "Bizagent-Event-Id"
EVENT_TYPE_HEADER = "Bizagent-Event-Type"
ATTEMPT_HEADER = "Bizagent-Delivery-Attempt"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the ``Bizagent-Signature`` header for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
