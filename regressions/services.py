"""Writes of the regression suite: generate its cases, start a run, run it, and the automatic triggers.

A run asks each active case's question of the real agent (``agents.respond``, as a fresh conversation, the
way the playground's widget does through the reply task) and checks the reply for the case's facts
(``regressions.checks``). Cases are generated from the business's current data; after a catalog import they
are generated again before the run, so the suite tests the agent against the data it now has: a failure is
the agent getting that data wrong, not the data having changed (docs/admin.md, "Regression suite").

One run per business at a time: starting one while another is queued or running returns that one, except
that new data (cases generated again) while a run is already asking gets a run of its own; a run left by a
dead worker, unrenewed past ``REGRESSION_RUN_LEASE_SECONDS``, is marked failed and replaced.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from agents.cards import Card
from agents.models import Agent
from agents.respond import Done, Usage, respond
from agents.selectors import agent_for
from businesses.models import Business
from common import aio
from common.tasks import enqueue_on_commit
from regressions import checks, generation
from regressions.models import RegressionCase, RegressionResult, RegressionRun, ReplyMark

logger = logging.getLogger(__name__)

RUN_TASK = "regressions.tasks.run_suite"
ACTIVE_STATES = (RegressionRun.State.PENDING, RegressionRun.State.RUNNING)


@dataclass(frozen=True)
class Regenerated:
    created: int
    updated: int
    retired: int  # cases whose source is gone, now inactive
    active: int


def cases_regenerate(*, business: Business, agent: Agent | None = None) -> Regenerated:
    """Generate the business's cases from its data and store them: a case of the same source (and kind and
    language) is updated in place, so its history stays one line; cases no longer generated go inactive.
    ``agent``: the settings whose languages the questions are asked in (default: the published ones)."""
    specs = generation.generate(business, agent or agent_for(business))
    created = updated = 0
    with transaction.atomic(durable=True):
        existing = {
            (c.kind, c.source_key, c.language): c
            for c in RegressionCase.objects.select_for_update().filter(business=business)
        }
        kept: set[int] = set()
        for spec in specs:
            fields = {
                "question": spec.question[:600],
                "expected": spec.expected,
                "item_id": spec.item_id,
                "chunk_id": spec.chunk_id,
                "curated_id": spec.curated_id,
                "mark_id": spec.mark_id,
                "active": True,
            }
            case = existing.get((spec.kind, spec.source_key, spec.language))
            if case is None:
                case = RegressionCase.objects.create(
                    business=business,
                    kind=spec.kind,
                    source_key=spec.source_key,
                    language=spec.language,
                    **fields,
                )
                existing[(spec.kind, spec.source_key, spec.language)] = case
                created += 1
            elif case.pk not in kept:
                changed = [name for name, value in fields.items() if getattr(case, name) != value]
                if changed:
                    for name in changed:
                        setattr(case, name, fields[name])
                    case.save(update_fields=[*changed, "updated_at"])
                    updated += 1
            kept.add(case.pk)
        retired = (
            RegressionCase.objects.filter(business=business, active=True)
            .exclude(pk__in=kept)
            .update(active=False)
        )
    return Regenerated(created=created, updated=updated, retired=retired, active=len(kept))


def reply_mark(
    *,
    business: Business,
    verdict: str,
    question: str,
    reply_text: str,
    answer_kind: str = "",
    external_ids: list[str] | None = None,
    message_id: int | None = None,
    marked_by: AbstractBaseUser | None = None,
) -> ReplyMark:
    """The owner's verdict on an agent reply (marking the same reply again replaces it), with the case it
    makes in the suite generated at once. ``ValueError`` for an unknown verdict or an empty question."""
    if verdict not in ReplyMark.Verdict.values:
        raise ValueError(f"verdict must be one of {ReplyMark.Verdict.values}, not {verdict!r}")
    question = " ".join(question.split())[:600]
    if not question or not reply_text.strip():
        raise ValueError("a marked reply needs the question it answered and its text")
    fields = {
        "verdict": verdict,
        "question": question,
        "reply_text": reply_text.strip(),
        "answer_kind": answer_kind[:16],
        "external_ids": [str(e) for e in (external_ids or [])][:10],
        "marked_by": marked_by,
    }
    with transaction.atomic(durable=True):
        if message_id is None:
            mark = ReplyMark.objects.create(business=business, **fields)
        else:
            mark, _ = ReplyMark.objects.update_or_create(
                business=business, message_id=message_id, defaults=fields
            )
    cases_regenerate(business=business)
    return mark


def _abandon_stale(business: Business) -> None:
    cutoff = timezone.now() - timedelta(seconds=settings.REGRESSION_RUN_LEASE_SECONDS)
    RegressionRun.objects.filter(business=business, state__in=ACTIVE_STATES).filter(
        Q(claimed_at__lt=cutoff) | Q(claimed_at__isnull=True, created_at__lt=cutoff)
    ).update(
        state=RegressionRun.State.FAILED,
        finished_at=timezone.now(),
        error_message="abandoned: its worker stopped before the run finished",
    )


def run_start(
    *, business: Business, trigger: str, enqueue: bool = True, regenerate: bool = False
) -> RegressionRun:
    """Queue a run of the business's suite (``regressions.tasks.run_suite`` on commit; ``enqueue=False``:
    the caller runs ``run_execute`` itself). A business without cases gets them generated first, and so does
    every run with ``regenerate``. A run already queued is returned instead of a second one, and so is one
    already running, unless the cases were generated again (its questions are the old ones)."""
    if trigger not in RegressionRun.Trigger.values:
        raise ValueError(f"unknown trigger {trigger!r}")
    _abandon_stale(business)
    if regenerate or not RegressionCase.objects.filter(business=business).exists():
        cases_regenerate(business=business)
    active = RegressionRun.objects.filter(business=business, state__in=ACTIVE_STATES, on_draft=False).first()
    # A queued run reads the cases when it starts, so it will ask the new ones; a running one has read
    # them already: after new data (an import, changed settings) another run follows it.
    if active is not None and (active.state == RegressionRun.State.PENDING or not regenerate):
        return active
    with transaction.atomic(durable=True):
        run = RegressionRun.objects.create(
            business=business,
            trigger=trigger,
            total=RegressionCase.objects.filter(business=business, active=True).count(),
        )
        if enqueue:
            enqueue_on_commit(RUN_TASK, run.pk)
    return run


def suite_after_import(*, business_id: int, enqueue: bool = True) -> RegressionRun | None:
    """After a catalog import succeeded: regenerate the cases from the new data and run them; nothing for a
    business that has no suite (one query)."""
    if not RegressionCase.objects.filter(business_id=business_id, active=True).exists():
        return None
    business = Business.objects.filter(pk=business_id).first()
    if business is None:
        return None
    return run_start(
        business=business, trigger=RegressionRun.Trigger.IMPORT, enqueue=enqueue, regenerate=True
    )


def suite_after_settings_change(
    *, business: Business, model_changed: bool, enqueue: bool = True
) -> RegressionRun | None:
    """After the agent's settings changed (its model, or anything else): run the suite, if it has one. The
    settings can change the questions' languages, so the cases are generated again first."""
    if not RegressionCase.objects.filter(business=business, active=True).exists():
        return None
    trigger = RegressionRun.Trigger.MODEL if model_changed else RegressionRun.Trigger.SETTINGS
    return run_start(business=business, trigger=trigger, enqueue=enqueue, regenerate=True)


def draft_run_start(*, business: Business, enqueue: bool = True) -> RegressionRun | None:
    """Queue a run of the suite on the agent's draft (None without a draft or without cases to ask), with
    the cases generated again first. The same draft already queued or running is returned instead of a
    second run. A business whose published settings have never been run gets that run queued too: a
    draft's regressions are counted against it."""
    agent = agent_for(business)
    draft = agent.draft
    if not draft:
        return None
    _abandon_stale(business)
    # In the draft's languages: a language it adds is asked too (its cases have nothing to regress from).
    cases_regenerate(business=business, agent=agent.with_draft())
    total = RegressionCase.objects.filter(business=business, active=True).count()
    if total == 0:
        return None
    if (
        not RegressionRun.objects.filter(business=business, on_draft=False)
        .exclude(state=RegressionRun.State.FAILED)
        .exists()
    ):
        run_start(business=business, trigger=RegressionRun.Trigger.SETTINGS, enqueue=enqueue)
    active = RegressionRun.objects.filter(
        business=business, on_draft=True, draft=draft, state__in=ACTIVE_STATES
    ).first()
    if active is not None:
        return active
    trigger = RegressionRun.Trigger.MODEL if "model" in draft else RegressionRun.Trigger.SETTINGS
    with transaction.atomic(durable=True):
        run = RegressionRun.objects.create(
            business=business, trigger=trigger, on_draft=True, draft=draft, total=total
        )
        if enqueue:
            enqueue_on_commit(RUN_TASK, run.pk)
    return run


@dataclass
class Answer:
    text: str = ""
    cards: list[Card] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def _ask(business: Business, agent: Agent, question: str, *, affinity_key: str) -> Answer:
    answer = Answer()
    events = respond(business=business, agent=agent, turns=[], question=question, affinity_key=affinity_key)
    async with contextlib.aclosing(events) as stream:
        async for event in stream:
            if isinstance(event, Usage):
                answer.calls += 1
                answer.prompt_tokens += event.prompt_tokens
                answer.completion_tokens += event.completion_tokens
            elif isinstance(event, Done):
                answer.text, answer.cards = event.text, event.cards
    return answer


def _claim(run_id: int) -> bool:
    now = timezone.now()
    lease_expired = now - timedelta(seconds=settings.REGRESSION_RUN_LEASE_SECONDS)
    return (
        RegressionRun.objects.filter(pk=run_id)
        .filter(
            Q(state=RegressionRun.State.PENDING)
            | Q(state=RegressionRun.State.RUNNING, claimed_at__lt=lease_expired)
        )
        .update(state=RegressionRun.State.RUNNING, claimed_at=now, started_at=now)
        == 1
    )


def _record(run: RegressionRun, case: RegressionCase, answer: Answer, duration_ms: int) -> bool:
    verdict = checks.check(case.expected, text=answer.text, cards=answer.cards, language=case.language)
    with transaction.atomic(durable=True):
        RegressionResult.objects.update_or_create(
            run=run,
            case=case,
            defaults={
                "business_id": run.business_id,
                "passed": verdict.passed,
                "question": case.question,
                "expected": case.expected,
                "reply_text": answer.text,
                "missing": verdict.missing,
                "inference_calls": answer.calls,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "duration_ms": duration_ms,
            },
        )
        # The lease: renewed after each case, so a long suite is never taken over while it makes progress.
        RegressionRun.objects.filter(pk=run.pk).update(claimed_at=timezone.now())
    return verdict.passed


def _finish(run: RegressionRun, *, state: str, error: str = "") -> None:
    results = RegressionResult.objects.filter(run=run)
    sums = results.aggregate(
        calls=Sum("inference_calls"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    run.passed = results.filter(passed=True).count()
    run.failed = results.filter(passed=False).count()
    run.total = max(run.total, run.passed + run.failed)
    run.inference_calls = sums["calls"] or 0
    run.prompt_tokens = sums["prompt"] or 0
    run.completion_tokens = sums["completion"] or 0
    run.state = state
    run.error_message = error[:1000]
    run.finished_at = timezone.now()
    run.save(
        update_fields=[
            "passed",
            "failed",
            "total",
            "inference_calls",
            "prompt_tokens",
            "completion_tokens",
            "state",
            "error_message",
            "finished_at",
        ]
    )


def run_execute(*, run_id: int) -> RegressionRun | None:
    """Run a queued run (or take over one whose lease expired; its answered cases are not asked again).
    Returns the run as it ended, or as it is when another worker has it; ``None`` when the row is gone."""
    if not _claim(run_id):
        return RegressionRun.objects.filter(pk=run_id).first()
    run = RegressionRun.objects.select_related("business").get(pk=run_id)
    business = run.business
    agent = agent_for(business)
    if run.on_draft:
        agent = agent.with_draft(run.draft)
    answered = RegressionResult.objects.filter(run=run).values_list("case_id", flat=True)
    cases = list(RegressionCase.objects.filter(business=business, active=True).exclude(pk__in=answered))
    RegressionRun.objects.filter(pk=run.pk).update(total=len(cases) + len(answered))
    run.total = len(cases) + len(answered)
    try:
        for case in cases:
            started = time.perf_counter()
            # No transaction is open here: the agent's retrieval and model calls run outside any.
            answer = aio.run(_ask(business, agent, case.question, affinity_key=f"regression-{run.pk}"))
            _record(run, case, answer, int((time.perf_counter() - started) * 1000))
    except Exception as exc:
        logger.exception("regression run %s failed", run.pk)
        _finish(run, state=RegressionRun.State.FAILED, error=f"{type(exc).__name__}: {exc}")
        return run
    _finish(run, state=RegressionRun.State.SUCCEEDED)
    return run
