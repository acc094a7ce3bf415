"""Publishing the agent's draft settings, gated on the regression suite: the draft is run through the suite
(``services.draft_run_start``) and compared with the latest run of the published settings; a case that
passed there and fails on the draft is a regression, and with ``Agent.publish_requires_suite`` a draft with
one (or still being checked) is not published (docs/admin.md, "Draft and publish")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agents.selectors import agent_for
from agents.services import agent_publish
from businesses.models import Business
from regressions import selectors, services
from regressions.models import RegressionRun

# none: no draft; unchecked: the business has no suite to run (nothing to gate on); running: the draft's
# run, or the published settings' run it is compared with, is not finished; failed: the draft's run
# stopped on an error; regressed / passed: finished, with or without regressions.
CheckState = Literal["none", "unchecked", "running", "failed", "regressed", "passed"]
BLOCKING: frozenset[CheckState] = frozenset({"running", "failed", "regressed"})


@dataclass(frozen=True)
class DraftCheck:
    state: CheckState
    gated: bool  # the agent's publish_requires_suite
    run: RegressionRun | None = None
    report: selectors.RunReport | None = None

    @property
    def may_publish(self) -> bool:
        return self.state != "none" and not (self.gated and self.state in BLOCKING)


class PublishBlocked(Exception):
    """The draft may not be published yet: the message says why."""


def draft_check(business: Business) -> DraftCheck:
    """Where the agent's draft stands with the suite: its newest run of this very draft, compared with the
    published settings' latest finished run."""
    agent = agent_for(business)
    gated = agent.publish_requires_suite
    if not agent.draft:
        return DraftCheck("none", gated)
    run = RegressionRun.objects.filter(business=business, on_draft=True, draft=agent.draft).first()
    if run is None:
        return DraftCheck("unchecked", gated)
    baseline_running = RegressionRun.objects.filter(
        business=business, on_draft=False, state__in=services.ACTIVE_STATES
    ).exists()
    if run.state in services.ACTIVE_STATES or baseline_running:
        return DraftCheck("running", gated, run)
    if run.state == RegressionRun.State.FAILED:
        return DraftCheck("failed", gated, run)
    report = selectors.run_report(run)
    return DraftCheck("regressed" if report.regressions else "passed", gated, run, report)


def draft_publish(business: Business) -> list[str]:
    """Publish the agent's draft, unless the suite holds it back (``PublishBlocked``); returns the fields
    that changed. The draft's passing run becomes the published settings' latest run; without one (the
    gate off, or no suite) the suite runs again on what is now published."""
    check = draft_check(business)
    if check.state == "none":
        return []
    if not check.may_publish:
        raise PublishBlocked(_blocked_reason(check))
    _, changed = agent_publish(business)
    if check.state == "passed" and check.run is not None:
        RegressionRun.objects.filter(pk=check.run.pk).update(on_draft=False)
    else:
        services.suite_after_settings_change(business=business, model_changed="model" in changed)
    return changed


def _blocked_reason(check: DraftCheck) -> str:
    if check.state == "running":
        return "The regression suite is still checking the draft; publish when it has finished."
    if check.state == "failed":
        return "The regression suite could not finish on the draft; check it again before publishing."
    count = len(check.report.regressions) if check.report else 0
    return (
        f"The draft breaks {count} answer{'s' if count != 1 else ''} that the published settings got "
        "right; fix the draft, or turn off 'publish only when the suite passes'."
    )
