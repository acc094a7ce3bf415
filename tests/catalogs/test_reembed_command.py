from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from catalogs.embeddings import get_backend
from catalogs.models import Item
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db(transaction=True)


def test_reembed_catalog_embeds_only_stale_rows_of_the_named_business(
    import_catalog: Callable[..., Any],
) -> None:
    shop, other = BusinessFactory(), BusinessFactory()
    import_catalog(shop, SMALL_CATALOG_CSV, embed=True)
    import_catalog(other, SMALL_CATALOG_CSV, embed=True)
    # As if the vectors came from another model: they are stale for the current backend.
    stale = Item.objects.filter(business=shop).update(embedding_model="old-model")
    Item.objects.filter(business=other).update(embedding_model="old-model")

    out = io.StringIO()
    call_command("reembed_catalog", "--business", shop.slug, stdout=out)

    assert out.getvalue().strip() == f"{shop.slug}: {stale} re-embedded (model {get_backend().name})"
    assert set(Item.objects.filter(business=shop).values_list("embedding_model", flat=True)) == {
        get_backend().name
    }
    assert set(Item.objects.filter(business=other).values_list("embedding_model", flat=True)) == {"old-model"}

    again = io.StringIO()
    call_command("reembed_catalog", "--business", shop.slug, stdout=again)
    assert again.getvalue().strip().startswith(f"{shop.slug}: 0 re-embedded")


def test_reembed_catalog_refuses_an_unknown_business() -> None:
    with pytest.raises(CommandError, match="no business with slug 'nope'"):
        call_command("reembed_catalog", "--business", "nope")
