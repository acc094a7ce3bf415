"""Create (idempotently) the demo business, its owner login and its catalog."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from businesses import services
from businesses.demo import DEMO_EMAIL, DEMO_NAME, DEMO_PASSWORD, DEMO_SLUG
from businesses.models import Business


class Command(BaseCommand):
    help = "Create the demo business, its owner login and its catalog (safe to run again)."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=DEMO_EMAIL).first()
            if user is None:
                user = User.objects.create_user(
                    username=DEMO_EMAIL, email=DEMO_EMAIL, password=DEMO_PASSWORD, is_staff=False
                )
            business = Business.objects.filter(slug=DEMO_SLUG).first()
            if business is None:
                business = services.business_create(
                    name=DEMO_NAME,
                    slug=DEMO_SLUG,
                    owner=user,
                    timezone_name="Europe/Berlin",
                    allowed_origins=[settings.PUBLIC_URL, "http://localhost:8000", "http://127.0.0.1:8000"],
                )
            elif services.normalize_origin(settings.PUBLIC_URL) not in business.allowed_origins:
                # Started again on another address (PORT, PUBLIC_URL): the demo page there gets its chat too.
                services.business_set_allowed_origins(
                    business, origins=[*business.allowed_origins, settings.PUBLIC_URL]
                )
            # The one business whose demo storefront is on without its owner asking (docs/security.md).
            if not business.demo_page_enabled:
                services.business_set_demo_page(business, enabled=True)
        self.stdout.write(f"demo business {business.slug!r} ready (login {DEMO_EMAIL})")
        self._import_demo_catalog(business)

    def _import_demo_catalog(self, business: Business) -> None:
        # Through the import service like any upload. Safe to repeat: an unchanged file changes no row and
        # embeds nothing (content hashes), so re-seeding costs a parse of ~300 rows.
        from catalogs.demo import DEMO_CATALOG, DEMO_FAQ
        from catalogs.services.imports import import_file

        for path, mode in ((DEMO_CATALOG, "full"), (DEMO_FAQ, "upsert")):
            imp = import_file(business=business, path=path, mode=mode)
            if imp.state != "succeeded":
                self.stderr.write(f"{path.name}: import failed: {imp.error_message}")
                continue
            self.stdout.write(
                f"{path.name}: {imp.created_count} created, {imp.updated_count} updated, "
                f"{imp.unchanged_count} unchanged, {imp.retired_count} retired, {imp.embedded_count} embedded"
            )
