"""``manage.py import_catalog --business SLUG [--create] [--mode upsert|full] [--format F] [--sheet NAME] FILE``.

Runs the same import service as the REST API and the Celery task, in the foreground and with embeddings, so
that the new catalog is searchable when it returns. Exit status 1 only when the file as a whole was
rejected; bad rows are listed in the summary and the rest imports (exit 0).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from businesses import services as business_services
from businesses.models import Business
from catalogs.importers import FORMAT_ALIASES, FORMATS
from catalogs.models import Import
from catalogs.services.imports import ImportRejected, import_file

SHOWN_ERRORS = 50


class Command(BaseCommand):
    help = "Import a catalog or FAQ file for a business, in the foreground (embeddings included)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--business", required=True, help="the business's slug")
        parser.add_argument("--create", action="store_true", help="create the business if it does not exist")
        parser.add_argument("--mode", choices=Import.Mode.values, default=Import.Mode.UPSERT)
        parser.add_argument("--format", choices=[*FORMATS, *FORMAT_ALIASES], help="skip format detection")
        parser.add_argument("--sheet", default="", help="XLSX: the sheet to read (default: the first)")
        parser.add_argument(
            "--mapping", default="", help='JSON {"source column": "field"}, e.g. {"Art.-Nr.": "external_id"}'
        )
        parser.add_argument(
            "--no-embed", action="store_true", help="write the items, leave the vectors for later"
        )
        parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        mapping = {}
        if options["mapping"]:
            try:
                mapping = json.loads(options["mapping"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--mapping is not JSON: {exc}") from exc
        business = Business.objects.filter(slug=options["business"]).first()
        if business is None:
            if not options["create"]:
                raise CommandError(
                    f"no business with slug {options['business']!r} (use --create to create it)"
                )
            with transaction.atomic():
                business = business_services.business_create(
                    name=options["business"].replace("-", " ").title(), slug=options["business"]
                )
        # SIGTERM ends the run like Ctrl-C: the import transaction rolls back, the catalog stays as it was.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        bar = _ProgressBar(self.stderr._out) if not options["json"] else None
        try:
            imp = import_file(
                business=business,
                path=path,
                mode=options["mode"],
                format=options["format"],
                mapping=mapping,
                sheet=options["sheet"],
                embed=not options["no_embed"],
                progress=bar.update if bar else None,
            )
        except ImportRejected as exc:
            raise CommandError(f"{path.name}: rejected: {exc}") from exc
        finally:
            if bar:
                bar.close()
        summary = {
            "import_id": imp.pk,
            "state": imp.state,
            "format": imp.format,
            **imp.counts(),
            "seconds": imp.timings.get("total"),
            "error": imp.error_message,
        }
        if options["json"]:
            self.stdout.write(json.dumps({**summary, "errors": imp.error_report[:SHOWN_ERRORS]}))
        elif imp.state == Import.State.FAILED:
            pass
        else:
            self.stdout.write(
                f"{path.name}: {imp.format}, {imp.created_count} created, {imp.updated_count} updated, "
                f"{imp.unchanged_count} unchanged, {imp.retired_count} retired, {imp.failed_count} failed rows, "
                f"{imp.embedded_count} embedded in {imp.timings.get('total', 0):.1f} s"
            )
            for error in imp.error_report[:SHOWN_ERRORS]:
                self.stdout.write(f"  row {error['row']}: {error['column']}: {error['reason']}")
            if imp.failed_count > SHOWN_ERRORS:
                self.stdout.write(
                    f"  ... and {imp.failed_count - SHOWN_ERRORS} more (the import's error report)"
                )
        if imp.state == Import.State.FAILED:
            raise CommandError(f"{path.name}: rejected: {imp.error_message}")


class _ProgressBar:
    """``writing  12,000 / 100,000 rows  4,800/s`` redrawn in place on stderr."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = False
        self.last_phase = ""

    def update(self, phase: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        line = f"{phase:<10} [{bar}] {done:,}/{total:,}" if total else f"{phase:<10} {done:,}"
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
        elif phase != self.last_phase:
            self.stream.write(line + "\n")
        self.last_phase = phase
        self.shown = True
        self.stream.flush()

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
