"""Log filters for the console."""

from __future__ import annotations

import logging

from django.conf import settings


class QuietPeriodicTasks(logging.Filter):
    """Drops Celery's INFO lines about the periodic tasks (beat sending one, a worker receiving it, finishing
    it): three sweeps every 10 s would otherwise bury the console under nine lines of nothing happening. Their
    warnings and failures, and every other task's lines, pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith("celery."):
            return True
        message = record.getMessage()
        return not any(str(entry["task"]) in message for entry in settings.CELERY_BEAT_SCHEDULE.values())
