"""The regression suite page: the last run (or a chosen one) case by case, compared with the run before it;
"Run now", "Regenerate cases", and the history of runs."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.permissions import BusinessRequest, member_view
from regressions import selectors, services
from regressions.models import RegressionRun


def _page(request: BusinessRequest, run: RegressionRun | None) -> HttpResponse:
    business = request.business
    return render(
        request,
        "dashboard/regressions.html",
        {
            "report": selectors.run_report(run) if run is not None else None,
            "history": selectors.runs(business),
            "case_count": selectors.cases_active(business).count(),
            "active": run is not None and run.state in services.ACTIVE_STATES,
        },
    )


@member_view("owner")
@require_GET
def regressions(request: BusinessRequest) -> HttpResponse:
    return _page(request, selectors.run_latest(request.business))


@member_view("owner", run_id="regression_run")
@require_GET
def regression_run(request: BusinessRequest, run_id: int) -> HttpResponse:
    run = selectors.run_get(request.business, run_id)
    if run is None:
        raise Http404
    return _page(request, run)


@member_view("owner")
@require_POST
def regressions_run(request: BusinessRequest) -> HttpResponse:
    business = request.business
    run = services.run_start(business=business, trigger=RegressionRun.Trigger.MANUAL)
    if run.trigger == RegressionRun.Trigger.MANUAL and run.state == RegressionRun.State.PENDING:
        messages.success(request, f"Run queued: {run.total} cases. This page shows it when it is done.")
    else:
        messages.info(request, "A run is already under way; its results appear here when it is done.")
    return redirect("dashboard:regressions", slug=business.slug)


@member_view("owner")
@require_POST
def regressions_regenerate(request: BusinessRequest) -> HttpResponse:
    business = request.business
    done = services.cases_regenerate(business=business)
    messages.success(
        request,
        f"{done.active} cases from your catalog, FAQ and curated answers "
        f"({done.created} new, {done.updated} changed, {done.retired} retired).",
    )
    return redirect("dashboard:regressions", slug=business.slug)
