"""Signed visitor tokens: who a widget visitor is, across page loads, without an account.

A token is ``django.core.signing`` over ``{"v": <visitor id>, "b": <business id>}``: the server issues it,
the widget keeps it (localStorage) and sends it in ``hello``. It cannot be forged or moved to another
business; a visitor id only ever reaches its own contact and conversations.
"""

from __future__ import annotations

import uuid

from django.core import signing

SALT = "bizagent.visitor"
MAX_AGE_SECONDS = 365 * 24 * 3600


def visitor_token_issue(business_id: int, visitor_id: str | None = None) -> tuple[str, str]:
    """A new (or re-signed) token: (token, visitor id)."""
    visitor_id = visitor_id or uuid.uuid4().hex
    return signing.dumps({"v": visitor_id, "b": business_id}, salt=SALT, compress=True), visitor_id


def visitor_from_token(business_id: int, token: str | None) -> str | None:
    """The visitor id in a valid token for this business, else None."""
    if not token or len(token) > 500:
        return None
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("b") != business_id or not isinstance(data.get("v"), str):
        return None
    return str(data["v"])


PLAYGROUND_SALT = "bizagent.playground"
PLAYGROUND_MAX_AGE_SECONDS = 12 * 3600


def playground_token_issue(business_id: int) -> str:
    """A token the admin's playground widget sends in ``hello``: its conversations answer with the agent's
    draft settings. Issued only to the business's members (the agent page), for a working day."""
    return signing.dumps({"b": business_id}, salt=PLAYGROUND_SALT)


def playground_token_valid(business_id: int, token: object) -> bool:
    """Whether ``token`` is a live playground token of this business."""
    if not isinstance(token, str) or not token or len(token) > 500:
        return False
    try:
        data = signing.loads(token, salt=PLAYGROUND_SALT, max_age=PLAYGROUND_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return False
    return isinstance(data, dict) and data.get("b") == business_id
