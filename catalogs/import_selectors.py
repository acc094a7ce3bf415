"""Reads of catalog imports (``catalogs/search/`` is the search). Business first."""

from __future__ import annotations

import csv
import io
import json
from typing import NotRequired

from django.db.models import QuerySet

# The REST API's schema (pydantic) reads it, and pydantic needs typing_extensions' TypedDict before 3.12.
from typing_extensions import TypedDict

from businesses.models import Business
from businesses.selectors import get_scoped_or_404, scoped
from catalogs.models import Import, ImportCountsJson
from catalogs.services.progress import LiveProgress, ReportLine, progress_key
from common.redis import sync_client


def imports_for(business: Business) -> QuerySet[Import]:
    return scoped(business, Import.objects.all()).order_by("-created_at")


def import_get(business: Business, import_id: int) -> Import:
    """This business's import, or 404 (another business's import is indistinguishable from a missing one)."""
    return get_scoped_or_404(business, Import.objects.all(), pk=import_id)


class ImportStatus(TypedDict):
    """An import as the REST API returns it (``import_status``)."""

    id: int
    filename: str
    format: str
    mode: str
    state: str
    phase: str
    rows_total: int
    rows_done: int
    counts: ImportCountsJson
    error: str | None
    errors_preview: list[ReportLine]
    timings: dict[str, float]  # seconds per step of the import (catalogs.services.imports)
    created_at: str
    started_at: str | None
    finished_at: str | None
    rate: NotRequired[float | None]  # while it runs: the live figures
    eta: NotRequired[float | None]


def import_live_progress(imp: Import) -> LiveProgress | None:
    """The last progress event of a running import (Redis), or None. While the import's transaction is open
    its row still says 0 rows done; this is where the live figures are."""
    if imp.state != Import.State.RUNNING:
        return None
    try:
        raw = sync_client().get(progress_key(imp.pk))
    except Exception:
        return None
    return json.loads(raw) if raw else None


def import_status(imp: Import) -> ImportStatus:
    """The JSON the REST API returns for an import."""
    status: ImportStatus = {
        "id": imp.pk,
        "filename": imp.original_filename,
        "format": imp.format or imp.requested_format,
        "mode": imp.mode,
        "state": imp.state,
        "phase": imp.phase,
        "rows_total": imp.rows_total,
        "rows_done": imp.rows_done,
        "counts": imp.counts(),
        "error": imp.error_message or None,
        "errors_preview": imp.error_report[:20],
        "timings": imp.timings,
        "created_at": imp.created_at.isoformat(),
        "started_at": imp.started_at.isoformat() if imp.started_at else None,
        "finished_at": imp.finished_at.isoformat() if imp.finished_at else None,
    }
    live = import_live_progress(imp)
    if live:
        status["phase"], status["rows_done"] = live["phase"], live["rows_done"]
        status["rows_total"] = live["rows_total"]
        status["rate"], status["eta"] = live.get("rate"), live.get("eta")
    return status


def import_error_report_csv(imp: Import) -> str:
    """The bad rows as CSV (``row,column,reason``), whole-file failure as a single row 0."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "column", "reason"])
    if imp.error_message:
        writer.writerow([0, "", imp.error_message])
    for error in imp.error_report:
        writer.writerow([error["row"], error["column"], error["reason"]])
    return out.getvalue()
