"""What an import reports: its counts and report lines (saved on the ``Import`` when it ends) and its live
progress, which cannot be written to the ``Import`` row while the import's transaction is open, so it goes
to Redis (``catalogs:import:<id>:progress``, read by ``import_selectors.import_status``) and to the Channels
group ``import.<id>`` as ``import.progress`` events."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

# The REST API's schema (pydantic) reads it, and pydantic needs typing_extensions' TypedDict before 3.12.
from typing_extensions import TypedDict

from catalogs.models import Import
from common.redis import sync_client

logger = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 10_000
PROGRESS_INTERVAL = 0.5  # seconds between progress publications
PROGRESS_TTL = 24 * 3600
ProgressCallback = Callable[[str, int, int], None]


def import_group(import_id: int) -> str:
    """The Channels group that receives ``import.progress`` events of one import."""
    return f"import.{import_id}"


def progress_key(import_id: int) -> str:
    return f"catalogs:import:{import_id}:progress"


class ReportLine(TypedDict):
    """A line of an import's report (``Import.error_report``): a row that failed, or imported with a change."""

    row: int
    column: str
    reason: str


class LiveProgress(TypedDict):
    """A running import's last progress figures, kept in Redis (``progress_key``)."""

    import_id: int
    phase: str
    rows_done: int
    rows_total: int
    rate: float  # rows per second in this phase
    eta: float | None  # seconds left in this phase


class ImportProgressEvent(LiveProgress):
    """The same, to the import's Channels group (``dashboard.consumers``)."""

    type: Literal["import.progress"]


@dataclass
class ImportCounts:
    """What the rows did, and the report's lines (at most ``MAX_ERRORS_KEPT``)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0
    failed: int = 0
    rows_done: int = 0
    errors: list[ReportLine] = field(default_factory=list)

    def error(self, row: int, column: str, reason: str) -> None:
        self.failed += 1
        self.warn(row, column, reason)

    def warn(self, row: int, column: str, reason: str) -> None:
        """A report line for a row that still imports (it is not counted as failed)."""
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append({"row": row, "column": column, "reason": reason})


class ImportProgress:
    """Publishes progress at most every ``PROGRESS_INTERVAL`` seconds (Redis hash + Channels group)."""

    def __init__(self, imp: Import, callback: ProgressCallback | None) -> None:
        self.imp = imp
        self.callback = callback
        self.started = time.monotonic()
        self.last = 0.0
        self.total = 0
        self.phase_started = self.started

    def phase(self, phase: str, total: int) -> None:
        self.total = total
        self.phase_started = time.monotonic()
        self.publish(phase, 0, force=True)

    def publish(self, phase: str, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        total = max(self.total, done)
        elapsed = now - self.phase_started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total else None
        event: LiveProgress = {
            "import_id": self.imp.pk,
            "phase": phase,
            "rows_done": done,
            "rows_total": total,
            "rate": round(rate, 1),
            "eta": round(eta, 1) if eta is not None else None,
        }
        if self.callback is not None:
            self.callback(phase, done, total)
        try:
            client = sync_client()
            client.set(progress_key(self.imp.pk), json.dumps(event), ex=PROGRESS_TTL)
            layer = get_channel_layer()
            if layer is not None:
                published: ImportProgressEvent = {"type": "import.progress", **event}
                async_to_sync(layer.group_send)(import_group(self.imp.pk), published)
        except Exception:  # progress is best effort: never fail an import because Redis hiccuped
            logger.warning("import %s: progress not published", self.imp.pk, exc_info=True)
