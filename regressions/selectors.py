"""Reads of the regression suite, each inside one business."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

# The REST API's schema (pydantic) reads it, and pydantic needs typing_extensions' TypedDict before 3.12.
from typing_extensions import TypedDict

from businesses.models import Business
from regressions.models import RegressionCase, RegressionResult, RegressionRun

FINISHED = (RegressionRun.State.SUCCEEDED, RegressionRun.State.FAILED)


def runs(business: Business, *, limit: int = 20) -> list[RegressionRun]:
    return list(RegressionRun.objects.filter(business=business)[:limit])


def run_get(business: Business, run_id: int) -> RegressionRun | None:
    return RegressionRun.objects.filter(business=business, pk=run_id).first()


def run_latest(business: Business) -> RegressionRun | None:
    """The newest run of the published settings (a draft's runs are the draft's: ``regressions.gate``)."""
    return RegressionRun.objects.filter(business=business, on_draft=False).first()


def run_previous(run: RegressionRun) -> RegressionRun | None:
    """What ``run`` is compared with: the business's last finished run of the published settings before it;
    for a run of a draft, the latest finished run of the published settings the draft would replace."""
    published = RegressionRun.objects.filter(business_id=run.business_id, state__in=FINISHED, on_draft=False)
    if not run.on_draft:
        published = published.filter(created_at__lt=run.created_at)
    return published.exclude(pk=run.pk).first()


def cases_active(business: Business) -> QuerySet[RegressionCase]:
    return RegressionCase.objects.filter(business=business, active=True)


@dataclass(frozen=True)
class ResultRow:
    result: RegressionResult
    regression: bool  # passed in the previous run, fails in this one
    fixed: bool  # failed in the previous run, passes in this one


@dataclass(frozen=True)
class RunReport:
    run: RegressionRun
    previous: RegressionRun | None
    rows: list[ResultRow]  # regressions first, then the other failures, then the passes

    @property
    def regressions(self) -> list[ResultRow]:
        return [r for r in self.rows if r.regression]


def run_report(run: RegressionRun) -> RunReport:
    previous = run_previous(run)
    before: dict[int, bool] = (
        dict(RegressionResult.objects.filter(run=previous).values_list("case_id", "passed"))
        if previous
        else {}
    )
    rows = [
        ResultRow(
            result=result,
            regression=not result.passed and before.get(result.case_id) is True,
            fixed=result.passed and before.get(result.case_id) is False,
        )
        for result in RegressionResult.objects.filter(run=run).select_related("case")
    ]
    rows.sort(key=lambda r: (not r.regression, r.result.passed, r.result.case.kind, r.result.case_id))
    return RunReport(run=run, previous=previous, rows=rows)


class ResultJson(TypedDict):
    case: int
    kind: str
    language: str
    question: str
    expected: Any  # the facts the reply must state (RegressionCase.expected)
    passed: bool
    regression: bool  # passed in the run before, fails in this one
    reply: str
    missing: Any  # the expected facts the reply did not state


class RunJson(TypedDict):
    """A run as the REST API and ``manage.py regressions show --json`` give it."""

    id: int
    trigger: str
    on_draft: bool  # a run of the agent's draft settings (docs/admin.md, "Draft and publish")
    state: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    total: int
    passed: int
    failed: int
    regressions: int
    inference_calls: int
    prompt_tokens: int
    completion_tokens: int
    error: str
    previous_run: int | None
    results: list[ResultJson]


def run_json(report: RunReport) -> RunJson:
    """A run as the API and ``manage.py regressions show --json`` give it."""
    run = report.run
    return {
        "id": run.pk,
        "trigger": run.trigger,
        "on_draft": run.on_draft,
        "state": run.state,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "total": run.total,
        "passed": run.passed,
        "failed": run.failed,
        "regressions": len(report.regressions),
        "inference_calls": run.inference_calls,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "error": run.error_message,
        "previous_run": report.previous.pk if report.previous else None,
        "results": [
            {
                "case": row.result.case_id,
                "kind": row.result.case.kind,
                "language": row.result.case.language,
                "question": row.result.question,
                "expected": row.result.expected,
                "passed": row.result.passed,
                "regression": row.regression,
                "reply": row.result.reply_text,
                "missing": row.result.missing,
            }
            for row in report.rows
        ],
    }
