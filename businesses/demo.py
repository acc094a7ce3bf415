"""The demo business that the stack creates on first start, so that a new user has something to talk to."""

from __future__ import annotations

DEMO_SLUG = "trailhead-outfitters"
DEMO_NAME = "Trailhead Outfitters"
DEMO_EMAIL = "demo@bizagent.local"
DEMO_PASSWORD = "demo-password-123"
