"""Upsert vs full sync, atomicity, re-embedding only what changed, progress events, the task."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from catalogs.embeddings import get_backend
from catalogs.models import Import, Item
from catalogs.services.imports import import_run, import_start
from catalogs.services.progress import import_group, progress_key
from catalogs.tasks import run_import
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db

HEADER = "id,title,description,price,availability\n"


def rows(*lines):
    return HEADER + "".join(line + "\n" for line in lines)


def state(business):
    return {
        i.external_id: (i.title, str(i.price), i.is_active)
        for i in Item.objects.filter(business=business).order_by("external_id")
    }


def test_upsert_adds_and_updates_but_never_retires(import_catalog):
    business = BusinessFactory()
    import_catalog(business, rows("A,Alpha,,1.00 EUR,in stock", "B,Beta,,2.00 EUR,in stock"))
    imp = import_catalog(business, rows("B,Beta v2,,2.50 EUR,in stock", "C,Gamma,,3.00 EUR,in stock"))
    assert (imp.created_count, imp.updated_count, imp.unchanged_count, imp.retired_count) == (1, 1, 0, 0)
    assert state(business) == {
        "A": ("Alpha", "1.00", True),
        "B": ("Beta v2", "2.50", True),
        "C": ("Gamma", "3.00", True),
    }


def test_full_sync_retires_missing_items_and_brings_them_back(import_catalog):
    business = BusinessFactory()
    other = BusinessFactory()
    import_catalog(other, rows("A,Other shop's A,,9.00 EUR,in stock"))
    import_catalog(
        business,
        rows("A,Alpha,,1.00 EUR,in stock", "B,Beta,,2.00 EUR,in stock", "C,Gamma,,3.00 EUR,in stock"),
    )
    imp = import_catalog(
        business, rows("A,Alpha,,1.00 EUR,in stock", "C,Gamma,,3.00 EUR,in stock"), mode="full"
    )
    assert (imp.created_count, imp.updated_count, imp.unchanged_count, imp.retired_count) == (0, 0, 2, 1)
    assert state(business) == {
        "A": ("Alpha", "1.00", True),
        "B": ("Beta", "2.00", False),
        "C": ("Gamma", "3.00", True),
    }
    # Another business's catalog is never touched by this business's full sync.
    assert state(other) == {"A": ("Other shop's A", "9.00", True)}
    back = import_catalog(
        business,
        rows("A,Alpha,,1.00 EUR,in stock", "B,Beta,,2.00 EUR,in stock", "C,Gamma,,3.00 EUR,in stock"),
        mode="full",
    )
    assert (back.created_count, back.updated_count, back.unchanged_count, back.retired_count) == (0, 1, 2, 0)
    assert state(business)["B"] == ("Beta", "2.00", True)


def test_failure_mid_import_leaves_the_previous_catalog_intact(import_catalog, settings):
    business = BusinessFactory()
    import_catalog(business, rows("A,Alpha,,1.00 EUR,in stock", "B,Beta,,2.00 EUR,in stock"))
    before = state(business)
    settings.CATALOG_IMPORT_BATCH_SIZE = 2  # so that two batches are written before the broken element
    items = "".join(f"<item><g:id>N{n}</g:id><g:title>New {n}</g:title></item>" for n in range(5))
    feed = (
        '<?xml version="1.0"?><rss xmlns:g="http://base.google.com/ns/1.0"><channel>'
        "<item><g:id>A</g:id><g:title>Alpha renamed</g:title></item>"
        + items
        + "<item><g:id>BROKEN</g:title></item>"
    )
    imp = import_catalog(business, feed, filename="feed.xml", mode="full")
    assert imp.state == "failed"
    assert imp.error_message.startswith("the XML is not well-formed after item 6 (mismatched tag")
    assert state(business) == before
    assert Import.objects.get(pk=imp.pk).created_count == 0


@pytest.mark.django_db(transaction=True)
def test_readers_see_the_previous_catalog_until_the_import_commits(catalog_media, tmp_path, settings):
    """A reader on another connection, while the import's transaction is open, sees only the old catalog."""
    business = BusinessFactory()
    first = tmp_path / "first.csv"
    first.write_text(rows("A,Alpha,,1.00 EUR,in stock"))
    import_run(import_id=import_start(business=business, path=first, embed=False, enqueue=False).pk)
    second = tmp_path / "second.csv"
    second.write_text(rows("A,Alpha v2,,1.00 EUR,in stock", "B,Beta,,2.00 EUR,in stock"))
    imp = import_start(business=business, path=second, embed=False, enqueue=False)
    seen: list[dict] = []

    def progress(phase, done, total):
        if phase == "writing" and done == 2 and not seen:
            # Runs inside the import's open transaction: look from another thread (another connection).
            def read():
                seen.append(state(business))
                connections.close_all()

            reader = threading.Thread(target=read)
            reader.start()
            reader.join()

    import_run(import_id=imp.pk, progress=progress)
    assert seen == [{"A": ("Alpha", "1.00", True)}]
    assert state(business) == {"A": ("Alpha v2", "1.00", True), "B": ("Beta", "2.00", True)}


def test_reimport_embeds_only_new_and_changed_text(import_catalog):
    business = BusinessFactory()
    backend = get_backend()
    first = import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    assert (first.created_count, first.embedded_count) == (3, 3)
    items = {i.external_id: i for i in Item.objects.filter(business=business)}
    assert {i.embedding_model for i in items.values()} == {backend.name}
    assert all(len(i.embedding) == 384 for i in items.values())
    stamps = {k: i.updated_at for k, i in items.items()}

    same = import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    assert (same.created_count, same.updated_count, same.unchanged_count, same.embedded_count) == (0, 0, 3, 0)
    assert {i.external_id: i.updated_at for i in Item.objects.filter(business=business)} == stamps

    # A price change rewrites the row but keeps the vector; a title change re-embeds that item only.
    changed = SMALL_CATALOG_CSV.replace("249.00 EUR", "229.00 EUR").replace(
        "Pocket gas stove", "Pocket gas burner"
    )
    again = import_catalog(business, changed, embed=True)
    assert (again.created_count, again.updated_count, again.unchanged_count, again.embedded_count) == (
        0,
        2,
        1,
        1,
    )
    after = {i.external_id: i for i in Item.objects.filter(business=business)}
    assert list(after["TENT-2P"].embedding) == list(items["TENT-2P"].embedding)
    assert list(after["STOVE-1"].embedding) != list(items["STOVE-1"].embedding)
    assert after["STOVE-1"].embedding_model == backend.name


def test_progress_is_published_to_redis_and_the_channels_group(
    import_catalog, catalog_media, tmp_path, redis_client
):
    business = BusinessFactory()
    path = tmp_path / "c.csv"
    path.write_text(SMALL_CATALOG_CSV)
    imp = import_start(business=business, path=path, embed=False, enqueue=False)
    layer = get_channel_layer()
    calls = []

    async def subscribe_and_import() -> list[dict]:
        # Pub/sub delivers only to a live subscription: subscribe, then import while receiving (one loop).
        channel = await layer.new_channel()
        await layer.group_add(import_group(imp.pk), channel)
        received: list[dict] = []

        async def drain() -> None:
            while not received or received[-1]["phase"] != "done":
                received.append(await layer.receive(channel))

        receiving = asyncio.create_task(drain())
        await sync_to_async(import_run)(import_id=imp.pk, progress=lambda *args: calls.append(args))
        await asyncio.wait_for(receiving, 10)
        return received

    events = async_to_sync(subscribe_and_import)()
    assert events[0] == {
        "type": "import.progress",
        "import_id": imp.pk,
        "phase": "writing",
        "rows_done": 0,
        "rows_total": 3,
        "rate": 0.0,
        "eta": None,
    }
    assert (events[-1]["phase"], events[-1]["rows_done"], events[-1]["rows_total"]) == ("done", 3, 3)
    assert calls[0] == ("writing", 0, 3) and calls[-1] == ("done", 3, 3)
    stored = json.loads(redis_client.get(progress_key(imp.pk)))
    assert (stored["phase"], stored["rows_done"]) == ("done", 3)


def test_task_is_idempotent(catalog_media, tmp_path):
    business = BusinessFactory()
    path = tmp_path / "c.csv"
    path.write_text(SMALL_CATALOG_CSV)
    imp = import_start(business=business, path=path, embed=False, enqueue=False)
    run_import(imp.pk)
    done = Import.objects.get(pk=imp.pk)
    assert (done.state, done.created_count) == ("succeeded", 3)
    run_import(imp.pk)  # a redelivered message
    again = Import.objects.get(pk=imp.pk)
    assert (again.state, again.created_count, again.finished_at) == ("succeeded", 3, done.finished_at)
    assert Item.objects.filter(business=business).count() == 3
    run_import(987654321)  # a deleted import: nothing to do, no error


def test_start_enqueues_the_task_on_commit(catalog_media, tmp_path, django_capture_on_commit_callbacks):
    business = BusinessFactory()
    path = tmp_path / "c.csv"
    path.write_text(SMALL_CATALOG_CSV)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        imp = import_start(business=business, path=path)
    assert len(callbacks) == 1
    assert (imp.state, imp.phase, imp.original_filename) == ("pending", "queued", "c.csv")
    assert imp.file.read() == SMALL_CATALOG_CSV.encode()
