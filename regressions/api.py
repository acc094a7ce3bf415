"""REST API v1 of the regression suite (docs/api.md), each request inside its API key's business:

- ``POST /api/v1/regressions/runs`` (optional JSON body ``{"regenerate": true}``, or the form field
  ``regenerate=true``: generate the cases from the data first) -> 202 ``{"id": ..., "state": "pending",
  "status_url": ...}`` (a run already queued or running is returned instead, with 200)
- ``GET /api/v1/regressions/runs/latest`` -> the newest run with its results (404 before the first run)
- ``GET /api/v1/regressions/runs/<id>`` -> that run; another business's run answers 404, like a missing one

Starting a run needs the ``write`` scope, reading one ``read``.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import Schema, Status

from businesses.api_auth import READ, WRITE, api_business
from common.idempotency import IdempotentRouter
from common.problems import Problem
from regressions import selectors, services
from regressions.models import RegressionRun
from regressions.selectors import RunJson

router = IdempotentRouter(tags=["regression suite"])

BODY_SHAPE = 'the body must be JSON: {"regenerate": true|false}'


class RunStarted(Schema):
    id: int
    state: str
    status_url: str


def _regenerate(request: HttpRequest) -> bool:
    if request.content_type == "application/json" and request.body.strip():
        try:
            body = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Problem(400, BODY_SHAPE, code="validation_failed") from exc
        if (
            not isinstance(body, dict)
            or set(body) - {"regenerate"}
            or not isinstance(body.get("regenerate", False), bool)
        ):
            raise Problem(400, BODY_SHAPE, code="validation_failed")
        return bool(body.get("regenerate", False))
    return str(request.POST.get("regenerate") or "").lower() in ("1", "true", "yes")


@router.post(
    "/regressions/runs",
    response={200: RunStarted, 202: RunStarted},
    auth=WRITE,
    summary="Run the regression suite (or get the run already queued)",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"regenerate": {"type": "boolean", "default": False}},
                        "additionalProperties": False,
                    }
                }
            },
        }
    },
)
def run_create(request: HttpRequest, response: HttpResponse) -> Status[dict[str, Any]]:
    business = api_business(request)
    regenerate = _regenerate(request)
    before = RegressionRun.objects.filter(business=business).values_list("pk", flat=True).first()
    run = services.run_start(business=business, trigger=RegressionRun.Trigger.API, regenerate=regenerate)
    url = f"/api/v1/regressions/runs/{run.pk}"
    response["Location"] = url
    return Status(202 if run.pk != before else 200, {"id": run.pk, "state": run.state, "status_url": url})


@router.get("/regressions/runs/latest", response=RunJson, auth=READ, summary="The newest run and its results")
def run_latest(request: HttpRequest) -> RunJson:
    run = selectors.run_latest(api_business(request))
    if run is None:
        raise Problem(404, "no run yet: POST /api/v1/regressions/runs starts one")
    return selectors.run_json(selectors.run_report(run))


@router.get("/regressions/runs/{int:run_id}", response=RunJson, auth=READ, summary="A run and its results")
def run_detail(request: HttpRequest, run_id: int) -> RunJson:
    run = selectors.run_get(api_business(request), run_id)
    if run is None:
        raise Http404
    return selectors.run_json(selectors.run_report(run))
