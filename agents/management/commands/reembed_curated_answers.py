"""Re-embed curated answers' phrasings after an embedding model change."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.services import curated_reembed_stale
from businesses.models import Business
from catalogs.embeddings import get_backend


class Command(BaseCommand):
    help = "Re-embed the curated answers' questions and paraphrases whose vector came from another model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--business", help="slug of one business (default: every business)")

    def handle(self, *args: Any, **options: Any) -> None:
        businesses = Business.objects.order_by("pk")
        if options["business"]:
            businesses = businesses.filter(slug=options["business"])
            if not businesses.exists():
                raise CommandError(f"no business with slug {options['business']!r}")
        model = get_backend().name
        for business in businesses:
            count = curated_reembed_stale(business_id=business.pk)
            self.stdout.write(f"{business.slug}: {count} re-embedded (model {model})")
