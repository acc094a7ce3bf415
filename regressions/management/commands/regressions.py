"""``manage.py regressions run|show|generate``: the regression suite of one business or of all of them."""

from __future__ import annotations

import json
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet

from businesses.models import Business
from regressions import selectors, services
from regressions.models import RegressionRun


class Command(BaseCommand):
    help = "Run the regression suite (run), show its last result (show), or regenerate its cases (generate)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        run = sub.add_parser("run", help="run the suite now, in this process (or queue it: --background)")
        target = run.add_mutually_exclusive_group(required=True)
        target.add_argument("--business", help="slug of one business")
        target.add_argument("--all", action="store_true", help="every business that has a suite")
        run.add_argument("--background", action="store_true", help="queue each run on the workers instead")
        run.add_argument("--regenerate", action="store_true", help="generate the cases from the data first")
        show = sub.add_parser("show", help="the last run of one business (default: every business)")
        show.add_argument("--business", help="slug of one business")
        show.add_argument("--json", action="store_true", help="the API's JSON, one object per line")
        generate = sub.add_parser("generate", help="generate the cases of one business from its data")
        generate.add_argument("--business", required=True, help="slug of one business")

    def _businesses(self, slug: str | None, *, with_suite: bool) -> QuerySet[Business]:
        businesses = Business.objects.order_by("slug")
        if slug:
            businesses = businesses.filter(slug=slug)
            if not businesses.exists():
                raise CommandError(f"no business with slug {slug!r}")
        elif with_suite:
            businesses = businesses.filter(regression_cases__isnull=False).distinct()
        return businesses

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "run":
            self._run(options)
        elif action == "show":
            self._show(options)
        else:
            business = self._businesses(options["business"], with_suite=False).get()
            done = services.cases_regenerate(business=business)
            self.stdout.write(
                f"{business.slug}: {done.active} cases ({done.created} new, {done.updated} changed, "
                f"{done.retired} retired)"
            )

    def _run(self, options: dict[str, Any]) -> None:
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True  # the running business finishes its run; the next ones are not started

        previous = signal.signal(signal.SIGTERM, stop)
        failures = 0
        try:
            for business in self._businesses(options["business"], with_suite=bool(options["all"])):
                if stopping:
                    self.stderr.write("stopped (SIGTERM): the remaining businesses were not run")
                    break
                run = services.run_start(
                    business=business,
                    trigger=RegressionRun.Trigger.API,
                    enqueue=bool(options["background"]),
                    regenerate=bool(options["regenerate"]),
                )
                if options["background"]:
                    self.stdout.write(f"{business.slug}: run {run.pk} queued ({run.total} cases)")
                    continue
                finished = services.run_execute(run_id=run.pk) or run
                if finished.state != RegressionRun.State.SUCCEEDED:
                    self.stdout.write(
                        f"{business.slug}: run {finished.pk} {finished.state} {finished.error_message}"
                    )
                    failures += 1
                    continue
                failures += 1 if finished.failed else 0
                self.stdout.write(self._line(business, finished))
        finally:
            signal.signal(signal.SIGTERM, previous)
        if failures:
            raise CommandError(f"{failures} business(es) with failing cases or runs")

    def _line(self, business: Business, run: RegressionRun) -> str:
        report = selectors.run_report(run)
        return (
            f"{business.slug}: run {run.pk} {run.state}, {run.passed}/{run.total} passed, {run.failed} failed, "
            f"{len(report.regressions)} regressions, {run.inference_calls} inference calls"
        )

    def _show(self, options: dict[str, Any]) -> None:
        for business in self._businesses(options["business"], with_suite=not options["business"]):
            run = selectors.run_latest(business)
            if run is None:
                self.stdout.write(f"{business.slug}: no run yet")
                continue
            report = selectors.run_report(run)
            if options["json"]:
                self.stdout.write(json.dumps({"business": business.slug, **selectors.run_json(report)}))
                continue
            self.stdout.write(self._line(business, run))
            for row in report.rows:
                if row.result.passed:
                    continue
                tag = "REGRESSION" if row.regression else "FAIL"
                self.stdout.write(f"  {tag} [{row.result.case.kind}] {row.result.question}")
                self.stdout.write(f"    missing: {'; '.join(row.result.missing)}")
                self.stdout.write(f"    reply: {row.result.reply_text[:200]!r}")
