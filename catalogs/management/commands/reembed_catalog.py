"""Re-embed catalogs after an embedding model change, in the background or in the foreground."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from businesses.models import Business
from catalogs import tasks
from catalogs.embeddings import get_backend, reembed_stale


class Command(BaseCommand):
    help = "Re-embed items and chunks whose vector is missing or came from another embedding model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--business", help="slug of one business (default: every business)")
        parser.add_argument(
            "--background", action="store_true", help="enqueue one Celery task per business on `ingest`"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        businesses = Business.objects.order_by("pk")
        if options["business"]:
            businesses = businesses.filter(slug=options["business"])
            if not businesses.exists():
                raise CommandError(f"no business with slug {options['business']!r}")
        model = get_backend().name
        for business in businesses:
            if options["background"]:
                tasks.reembed_business.delay(business.pk)
                self.stdout.write(f"{business.slug}: queued (model {model})")
            else:
                count = reembed_stale(business_id=business.pk)
                self.stdout.write(f"{business.slug}: {count} re-embedded (model {model})")
