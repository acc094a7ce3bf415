"""REST API of the regression suite, with the catalog API's key (``Authorization: Bearer <api key>``), each
request inside the key's business:

- ``POST /api/v1/regressions/runs`` (optional JSON body ``{"regenerate": true}``, or the form field
  ``regenerate=true``: generate the cases from the data first) -> 202 ``{"id": ..., "state": "pending", "status_url": ...}`` (a run already queued or running
  is returned instead, with 200)
- ``GET /api/v1/regressions/runs/latest`` -> the newest run with its results (404 before the first run)
- ``GET /api/v1/regressions/runs/<id>`` -> that run; another business's run answers 404, like a missing one
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from businesses.models import Business
from catalogs.api import api_key_required
from regressions import selectors, services
from regressions.models import RegressionRun


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt
@require_POST
@api_key_required
def run_create(request: HttpRequest, business: Business) -> HttpResponse:
    regenerate = str(request.POST.get("regenerate") or "").lower() in ("1", "true", "yes")
    if request.content_type == "application/json" and request.body.strip():
        try:
            body = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, 'the body must be JSON: {"regenerate": true|false}')
        if (
            not isinstance(body, dict)
            or set(body) - {"regenerate"}
            or not isinstance(body.get("regenerate", False), bool)
        ):
            return _error(400, 'the body must be JSON: {"regenerate": true|false}')
        regenerate = body.get("regenerate", False)
    before = RegressionRun.objects.filter(business=business).values_list("pk", flat=True).first()
    run = services.run_start(business=business, trigger=RegressionRun.Trigger.API, regenerate=regenerate)
    url = reverse("regressions:run-detail", args=[run.pk])
    created = run.pk != before
    response = JsonResponse(
        {"id": run.pk, "state": run.state, "status_url": url}, status=202 if created else 200
    )
    response["Location"] = url
    return response


@require_GET
@api_key_required
def run_latest(request: HttpRequest, business: Business) -> HttpResponse:
    run = selectors.run_latest(business)
    if run is None:
        return _error(404, "no run yet: POST /api/v1/regressions/runs starts one")
    return JsonResponse(selectors.run_json(selectors.run_report(run)))


@require_GET
@api_key_required
def run_detail(request: HttpRequest, business: Business, run_id: int) -> HttpResponse:
    run = selectors.run_get(business, run_id)
    if run is None:
        return _error(404, "not found")
    return JsonResponse(selectors.run_json(selectors.run_report(run)))
