"""The retry and disabling policy of deliveries, written down once (docs/webhooks.md, "Retries").

- A delivery succeeds on any 2xx answer. Anything else (another status, a redirect, a timeout, a transport
  error, an address the rule refuses) is a failed attempt.
- After the n-th failed attempt the next one is due after ``first * 2**(n-1)`` seconds, capped at ``max``,
  times a random factor between 0.8 and 1.2 (jitter: endpoints that failed together do not all come back at
  once). A delivery whose next attempt would fall more than ``window`` (24 h) after its event is abandoned.
- An endpoint is disabled when ``OUTBOUND_WEBHOOK_DISABLE_AFTER_ABANDONED`` deliveries in a row were
  abandoned, or when every attempt has failed for ``window``; its open deliveries are abandoned with it.
"""

from __future__ import annotations

import datetime as dt
import random

from django.conf import settings

JITTER = (0.8, 1.2)


def retry_delay(failed_attempts: int) -> dt.timedelta:
    base = settings.OUTBOUND_WEBHOOK_RETRY_FIRST_SECONDS * 2 ** (failed_attempts - 1)
    capped = min(base, settings.OUTBOUND_WEBHOOK_RETRY_MAX_SECONDS)
    return dt.timedelta(seconds=capped * random.uniform(*JITTER))


def window() -> dt.timedelta:
    return dt.timedelta(seconds=settings.OUTBOUND_WEBHOOK_RETRY_WINDOW_SECONDS)


def gives_up(event_created_at: dt.datetime, next_attempt_at: dt.datetime) -> bool:
    return next_attempt_at > event_created_at + window()


def disable_reason(
    *, failing_since: dt.datetime | None, abandoned_in_a_row: int, now: dt.datetime, last_error: str
) -> str:
    """Why the endpoint must be disabled now, for the owner; empty while it may go on."""
    limit = settings.OUTBOUND_WEBHOOK_DISABLE_AFTER_ABANDONED
    if abandoned_in_a_row >= limit:
        why = f"{abandoned_in_a_row} deliveries in a row were abandoned after retrying for {window()}"
    elif failing_since is not None and now - failing_since >= window():
        why = f"every attempt has failed since {failing_since:%Y-%m-%d %H:%M} UTC"
    else:
        return ""
    return f"Disabled on {now:%Y-%m-%d %H:%M} UTC: {why} (last error: {last_error or 'none'})."[:300]
