"""Checks on text from outside before it is stored."""

from __future__ import annotations


def holds_nul(value: object) -> bool:
    """Whether ``value`` (a string, or JSON made of dicts and lists) holds a NUL character anywhere: PostgreSQL
    stores none in text or JSON, so such input is refused at the door with a clear error instead of failing
    the write (a 500, or a closed chat socket)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False
