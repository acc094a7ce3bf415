"""The demo shop: its generated catalog is what the generator writes, and seeding twice embeds nothing new."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from businesses.demo import DEMO_SLUG
from businesses.models import Business
from catalogs.demo import DEMO_CATALOG
from catalogs.demo.generate import render
from catalogs.models import Chunk, Document, Item

pytestmark = pytest.mark.django_db


def test_committed_demo_catalog_matches_the_generator():
    assert DEMO_CATALOG.read_text(encoding="utf-8") == render()


def test_seed_demo_imports_catalog_and_faq_idempotently(catalog_media):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    business = Business.objects.get(slug=DEMO_SLUG)
    items = Item.objects.filter(business=business)
    total = items.count()
    assert total == len(render().splitlines()) - 2
    assert items.filter(embedding__isnull=True).count() == 0
    assert items.filter(availability="out_of_stock").exists()
    assert items.exclude(sale_price=None).exists()
    assert Document.objects.get(business=business).kind == "faq"
    chunks = Chunk.objects.filter(business=business)
    assert chunks.filter(embedding__isnull=True).count() == 0
    assert chunks.filter(heading__endswith="Shipping > Shipping costs").exists()
    lines = out.getvalue().splitlines()
    assert (
        lines[1]
        == f"trailhead-outfitters.csv: {total} created, 0 updated, 0 unchanged, 0 retired, {total} embedded"
    )

    again = StringIO()
    call_command("seed_demo", stdout=again)
    lines = again.getvalue().splitlines()
    assert (
        lines[1]
        == f"trailhead-outfitters.csv: 0 created, 0 updated, {total} unchanged, 0 retired, 0 embedded"
    )
    assert lines[2].endswith(" 0 embedded")
    assert lines[2].startswith("faq.md: 0 created, 0 updated, ")


def test_seed_demo_on_another_address_allows_the_widget_there(catalog_media, settings):
    call_command("seed_demo", stdout=StringIO())
    settings.PUBLIC_URL = "http://127.0.0.1:8123"
    call_command("seed_demo", stdout=StringIO())
    origins = Business.objects.get(slug=DEMO_SLUG).allowed_origins
    assert "http://127.0.0.1:8123" in origins
    assert "http://127.0.0.1:8000" in origins
