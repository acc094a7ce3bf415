"""REST API of catalog imports, authenticated with ``Authorization: Bearer <api key>``.

- ``POST /api/v1/catalog/imports`` (multipart or form: ``file``, or ``url`` to fetch it from; optional ``mode``,
  ``format``, ``sheet``, ``mapping`` as JSON; ``mode=full`` needs ``confirm_full_sync=true``)
  -> 202 ``{"id": ..., "state": "pending", "status_url": ...}``
- ``GET /api/v1/catalog/imports/<id>`` -> the import's status (live progress while it runs)
- ``GET /api/v1/catalog/imports/<id>/errors.csv`` -> the bad rows as CSV

Another business's import answers 404, exactly like a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Concatenate, ParamSpec

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from businesses.models import Business
from businesses.selectors import business_for_api_key
from catalogs import import_selectors
from catalogs.importers import FORMAT_ALIASES, FORMATS
from catalogs.models import Import
from catalogs.services.imports import ImportRejected, import_start

P = ParamSpec("P")
URL_MAX_CHARS = 2000  # Import.source_url


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def api_key_required(
    view: Callable[Concatenate[HttpRequest, Business, P], HttpResponse],
) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """Resolve the business from the bearer key; 401 without a valid one. The view gets ``business``."""

    @wraps(view)
    def wrapper(request: HttpRequest, /, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        business = business_for_api_key(key.strip()) if scheme.lower() == "bearer" else None
        if business is None:
            response = _error(401, "a valid API key is required (Authorization: Bearer <key>)")
            response["WWW-Authenticate"] = "Bearer"
            return response
        try:
            return view(request, business, *args, **kwargs)
        except Http404:
            return _error(404, "not found")

    return wrapper


@dataclass
class ImportForm:
    """The multipart fields of an upload, validated."""

    mode: str = Import.Mode.UPSERT
    format: str | None = None
    sheet: str = ""
    mapping: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> tuple[ImportForm | None, dict[str, str]]:
        errors: dict[str, str] = {}
        form = cls()
        mode = data.get("mode") or Import.Mode.UPSERT
        if mode not in Import.Mode.values:
            errors["mode"] = f"one of {', '.join(Import.Mode.values)}"
        form.mode = mode
        # A full sync retires every item the file does not list: the caller says so explicitly.
        confirmed = str(data.get("confirm_full_sync") or "").lower() in ("1", "true", "yes")
        if mode == Import.Mode.FULL and not confirmed:
            errors["confirm_full_sync"] = (
                "a full sync retires every item missing from the file: send confirm_full_sync=true"
            )
        fmt = (data.get("format") or "").strip().lower() or None
        if fmt and fmt not in FORMATS and fmt not in FORMAT_ALIASES:
            errors["format"] = f"one of {', '.join(FORMATS)}"
        form.format = fmt
        form.sheet = (data.get("sheet") or "")[:100]
        raw_mapping = data.get("mapping") or ""
        if raw_mapping:
            try:
                mapping = json.loads(raw_mapping)
            except json.JSONDecodeError:
                mapping = None
            if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
            ):
                errors["mapping"] = 'a JSON object {"source column": "field"}'
            else:
                form.mapping = mapping
        return (None if errors else form), errors


@csrf_exempt
@require_POST
@api_key_required
def import_create(request: HttpRequest, business: Business) -> HttpResponse:
    upload = request.FILES.get("file")
    source_url = (request.POST.get("url") or "").strip()
    if (upload is None) == (not source_url):
        message = "send a file (multipart field 'file') or a url to fetch it from, not both"
        return _error(400, "invalid request", fields={"file": message})
    form, errors = ImportForm.parse(request.POST)
    if form is None:
        return _error(400, "invalid request", fields=errors)
    if upload is not None and upload.size is not None and upload.size > settings.CATALOG_MAX_UPLOAD_BYTES:
        return _error(413, f"the file is over the limit of {settings.CATALOG_MAX_UPLOAD_BYTES:,} bytes")
    if len(source_url) > URL_MAX_CHARS:
        return _error(400, "invalid request", fields={"url": f"at most {URL_MAX_CHARS} characters"})
    try:
        # A url is checked here (scheme, address) and fetched by the worker (common.safe_fetch).
        imp = import_start(
            business=business,
            upload=upload,
            url=source_url or None,
            filename=upload.name if upload is not None else None,
            mode=form.mode,
            format=form.format,
            mapping=form.mapping,
            sheet=form.sheet,
        )
    except ImportRejected as exc:
        return _error(400, str(exc))
    url = reverse("catalogs:import-detail", args=[imp.pk])
    response = JsonResponse({"id": imp.pk, "state": imp.state, "status_url": url}, status=202)
    response["Location"] = url
    return response


@require_GET
@api_key_required
def import_detail(request: HttpRequest, business: Business, import_id: int) -> HttpResponse:
    imp = import_selectors.import_get(business, import_id)
    return JsonResponse(import_selectors.import_status(imp))


@require_GET
@api_key_required
def import_errors_csv(request: HttpRequest, business: Business, import_id: int) -> HttpResponse:
    imp = import_selectors.import_get(business, import_id)
    response = HttpResponse(
        import_selectors.import_error_report_csv(imp), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="import-{imp.pk}-errors.csv"'
    return response
