"""Search one business's catalog from the command line: the same hybrid search the agent uses."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from businesses.models import Business
from catalogs.search import SearchFilters, search


class Command(BaseCommand):
    help = 'Search a business\'s catalog: search_catalog --business SLUG [--limit N] [--json] "QUERY"'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query", help="the question or keywords, as a customer would type them")
        parser.add_argument("--business", required=True, help="the business's slug")
        parser.add_argument("--limit", type=int, default=10)
        parser.add_argument("--json", action="store_true", help="one JSON object per line")
        parser.add_argument("--in-stock", action="store_true", help="only items in stock")
        parser.add_argument("--min-price", type=Decimal)
        parser.add_argument("--max-price", type=Decimal)
        parser.add_argument("--category")
        parser.add_argument("--mode", choices=("hybrid", "vector", "fulltext"), default="hybrid")

    def handle(self, *args: Any, **options: Any) -> None:
        business = Business.objects.filter(slug=options["business"]).first()
        if business is None:
            raise CommandError(f"no business with slug {options['business']!r}")
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        filters = SearchFilters(
            in_stock_only=options["in_stock"],
            min_price=options["min_price"],
            max_price=options["max_price"],
            category=options["category"] or None,
        )
        hits = search(
            business, options["query"], filters=filters, limit=options["limit"], mode=options["mode"]
        )
        for rank, hit in enumerate(hits, start=1):
            if options["json"]:
                self.stdout.write(
                    json.dumps(
                        {
                            "external_id": hit.external_id,
                            "title": hit.title,
                            "score": hit.score,
                            "kind": hit.kind,
                            "item_id": hit.item_id,
                            "chunk_id": hit.chunk_id,
                            "price": str(hit.price) if hit.price is not None else None,
                            "currency": hit.currency,
                            "availability": hit.availability,
                            "vector": hit.vector_score,
                            "fulltext": hit.fulltext_score,
                            "trigram": hit.trigram_score,
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                price = f"{hit.price} {hit.currency}" if hit.price is not None else ""
                self.stdout.write(
                    f"{rank:>2}. {hit.score:.3f}  {hit.external_id or '[' + hit.kind + ']'}  {hit.title}"
                    f"  {price}  {hit.availability}".rstrip()
                )
        if not hits and not options["json"]:
            self.stdout.write("no results")
