"""Hybrid search: each leg, the filters, retired items, tenant isolation and the large-tenant vector plan.

The catalogs are the labelled retrieval set's shops (bench/data/retrieval-eval), imported through the real
import service with the local embedder.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from businesses.models import Business
from catalogs.embeddings import embed_query
from catalogs.models import Chunk, Document, Item
from catalogs.search import (
    SearchFilters,
    SearchHit,
    filters_from_question,
    fusion,
    prepare,
    prepare_search,
    run_search,
    search,
    vector_plan,
    words,
)
from catalogs.selectors import items_by_ids
from tests.factories import BusinessFactory

pytestmark = pytest.mark.django_db

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "retrieval-eval"


@pytest.fixture(autouse=True)
def _fresh_tenant_sizes() -> None:
    # The tenant-size cache lives per process; ids are reused across tests' rolled-back transactions.
    prepare._sizes.clear()


@pytest.fixture
def bike_shop(import_catalog: Callable[..., Any]) -> Business:
    business = BusinessFactory(slug="velo")
    imp = import_catalog(business, DATA / "bike.csv", embed=True)
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 81, 0)
    return business


@pytest.fixture
def hardware_shop(import_catalog: Callable[..., Any]) -> Business:
    business = BusinessFactory(slug="nails")
    imp = import_catalog(business, DATA / "hardware.csv", embed=True)
    assert (imp.state, imp.failed_count) == ("succeeded", 0)
    return business


def ids(hits: list[SearchHit]) -> list[str]:
    return [hit.external_id for hit in hits]


def test_finds_by_title_words(bike_shop: Business) -> None:
    hits = search(bike_shop, "Ortlieb handlebar bag", limit=5)
    assert hits[0].external_id == "VV-BG-056"
    top = hits[0]
    assert (top.kind, top.title, top.price, top.currency, top.availability) == (
        "item",
        "Handlebar bag 7 l",
        Decimal("69.00"),
        "EUR",
        "in_stock",
    )
    assert (top.brand, top.category) == ("Ortlieb", "bags")
    assert top.url == "https://shop.example/bike/p/vv-bg-056"
    assert top.image_url == "https://shop.example/bike/img/vv-bg-056.jpg"
    assert top.item_id == Item.objects.get(business=bike_shop, external_id="VV-BG-056").pk
    assert top.fulltext_score > 0.5 and top.vector_score > 0.5
    assert top.score == pytest.approx(
        top.vector_score
        + fusion.LEXICAL_WEIGHT * top.fulltext_score
        + fusion.TRIGRAM_WEIGHT * top.trigram_score**2,
        abs=1e-5,
    )


@pytest.mark.parametrize("query", ["VV-BK-031", "vv-bk-031", "do you still have VV-BK-031?", "vvbk031"])
def test_finds_by_sku(bike_shop: Business, query: str) -> None:
    hits = search(bike_shop, query, limit=3)
    assert hits[0].external_id == "VV-BK-031"
    if query == "vvbk031":  # not a SKU as typed: found by its trigrams
        assert hits[0].trigram_score == 1.0
    else:  # the exact SKU boost
        assert hits[0].score >= hits[0].vector_score + 1.0 - 1e-5


@pytest.mark.parametrize(
    ("query", "expected"),
    [("Granti", "VV-LO-045"), ("Ortleib panier", "VV-BG-054"), ("punture repair", "VV-PT-072")],
)
def test_finds_misspelled_words(bike_shop: Business, query: str, expected: str) -> None:
    hits = search(bike_shop, query, limit=3)
    assert expected in ids(hits)
    assert next(hit for hit in hits if hit.external_id == expected).trigram_score >= 0.5


def test_finds_by_meaning_without_shared_words(bike_shop: Business) -> None:
    hits = search(bike_shop, "keeps my hands warm", limit=3)
    assert hits[0].external_id == "VV-CL-062"  # Winter gloves
    assert hits[0].fulltext_score == 0.0 and hits[0].trigram_score == 0.0
    # No word of the question is in the gloves' text: full text alone cannot find them.
    assert "VV-CL-062" not in ids(search(bike_shop, "keeps my hands warm", limit=10, mode="fulltext"))


def test_single_legs_run_alone(bike_shop: Business) -> None:
    vector = search(bike_shop, "brass bell", limit=5, mode="vector")
    fulltext = search(bike_shop, "brass bell", limit=5, mode="fulltext")
    assert vector[0].external_id == fulltext[0].external_id == "VV-PT-074"
    assert all(hit.fulltext_score == 0 or hit.score == hit.vector_score for hit in vector)
    assert ids(fulltext) == ["VV-PT-074"]


def test_filters_in_stock_price_and_category(bike_shop: Business) -> None:
    everything = search(bike_shop, "city bike", limit=30)
    assert "out_of_stock" in {hit.availability for hit in everything}

    in_stock = search(bike_shop, "city bike", limit=30, filters=SearchFilters(in_stock_only=True))
    assert in_stock and {hit.availability for hit in in_stock} == {"in_stock"}

    cheap = search(
        bike_shop, "bike", limit=30, filters=SearchFilters(min_price=Decimal(400), max_price=Decimal(600))
    )
    assert cheap and all(Decimal(400) <= hit.price <= Decimal(600) for hit in cheap if hit.price is not None)
    assert all(hit.kind == "item" for hit in cheap)

    helmets = search(bike_shop, "something for my kid", limit=30, filters=SearchFilters(category="HELMETS"))
    assert set(ids(helmets)) == {"VV-HE-033", "VV-HE-034", "VV-HE-035", "VV-HE-036", "VV-HE-037", "VV-HE-038"}


def test_filters_read_from_the_question() -> None:
    assert filters_from_question("electric bike under 2000") == SearchFilters(max_price=Decimal(2000))
    assert filters_from_question("helmet between 20 and 49.90 EUR, in stock") == SearchFilters(
        in_stock_only=True, min_price=Decimal(20), max_price=Decimal("49.90")
    )
    assert filters_from_question("a lamp for over €30") == SearchFilters(min_price=Decimal(30))
    assert filters_from_question("bike for my 3 year old") == SearchFilters()


def test_question_budget_demotes_and_in_stock_filters(bike_shop: Business) -> None:
    hits = search(bike_shop, "ebike under 2000", limit=3)
    assert {hit.external_id for hit in hits} == {"VV-BK-010", "VV-BK-011", "VV-BK-012"}
    in_stock = search(bike_shop, "city bike in stock", limit=30)
    assert in_stock and {hit.availability for hit in in_stock} == {"in_stock"}


def test_retired_items_are_never_returned(bike_shop: Business, import_catalog: Callable[..., Any]) -> None:
    lines = (DATA / "bike.csv").read_text().splitlines(keepends=True)
    without = "".join(line for line in lines if not line.startswith("VV-LO-045,"))
    imp = import_catalog(bike_shop, without, mode="full", embed=True)
    assert imp.retired_count == 1
    retired = Item.objects.get(business=bike_shop, external_id="VV-LO-045")
    assert retired.is_active is False
    for query in ("VV-LO-045", "U-lock Granit X-Plus", "Granit", "a really secure lock"):
        for mode in ("hybrid", "vector", "fulltext"):
            assert "VV-LO-045" not in ids(search(bike_shop, query, limit=50, mode=mode))  # type: ignore[arg-type]
    assert items_by_ids(bike_shop, [retired.pk]) == {}


ADVERSARIAL = [
    "NI-F013",
    "Wall plugs 8 mm for concrete (50)",
    "wall plugs concrete",
    "' OR 1=1 --",
    "'); DROP TABLE catalogs_item; --",
    "business_id = 1 OR business_id <> 1",
    "concrete:* | !bike & (plug",
    '-bike OR "wall plugs"',
    "%%s %(business)s {0} \\x00",
    "\\'; select * from catalogs_item",
    "NI-F013 VV-BK-031 RB-001",
    "nails " * 200,
    "🙂 ünïcödé",
]


def test_no_query_reaches_another_business(bike_shop: Business, hardware_shop: Business) -> None:
    # The other business also holds an item under one of this shop's SKUs, with the other shop's words.
    Item.objects.create(
        business=hardware_shop,
        external_id="VV-BK-031",
        title="Wall plugs balance bike concrete",
        embedding=[0.05] * 384,
    )
    doc = Document.objects.create(business=hardware_shop, title="Returns", filename="returns.md")
    Chunk.objects.create(
        business=hardware_shop,
        document=doc,
        ordinal=0,
        text="Wall plugs returns within 30 days",
        content_hash="x",
        embedding=[0.05] * 384,
    )
    mine = set(Item.objects.filter(business=bike_shop).values_list("pk", flat=True))
    theirs = list(Item.objects.filter(business=hardware_shop).values_list("pk", flat=True))
    for query in ADVERSARIAL:
        for mode in ("hybrid", "vector", "fulltext"):
            hits = search(bike_shop, query, limit=100, mode=mode)  # type: ignore[arg-type]
            assert all(hit.kind == "item" and hit.item_id in mine for hit in hits), (query, mode)
        # And the hardware shop's own results stay its own.
        for hit in search(hardware_shop, query, limit=100):
            assert hit.item_id is None or hit.item_id in theirs
    assert Item.objects.count() == len(mine) + len(theirs)  # nothing was dropped or written
    assert items_by_ids(bike_shop, theirs) == {}
    assert set(items_by_ids(hardware_shop, theirs)) == set(theirs)


def test_document_chunks_are_searched(bike_shop: Business) -> None:
    from catalogs.embeddings import get_backend

    doc = Document.objects.create(business=bike_shop, title="Opening hours", filename="hours.md")
    text = "We are open Monday to Friday 9:00-18:00 and Saturday 10:00-14:00."
    Chunk.objects.create(
        business=bike_shop,
        document=doc,
        ordinal=0,
        heading="When are you open",
        text=text,
        content_hash="h",
        embedding=get_backend().embed([f"When are you open. {text}"])[0],
    )
    hits = search(bike_shop, "what time do you open on saturday", limit=3)
    assert hits[0].kind == "chunk"
    assert (hits[0].title, hits[0].item_id, hits[0].extra) == (
        "Opening hours: When are you open",
        None,
        {"document_id": doc.pk},
    )
    # Chunks carry no price or stock: a product filter leaves them out.
    filtered = search(
        bike_shop, "what time do you open on saturday", limit=3, filters=SearchFilters(in_stock_only=True)
    )
    assert all(hit.kind == "item" for hit in filtered)
    doc.is_active = False
    doc.save(update_fields=["is_active"])
    assert all(hit.kind == "item" for hit in search(bike_shop, "what time do you open on saturday", limit=3))


def test_min_passages_keeps_the_best_chunks_among_the_hits(bike_shop: Business, import_catalog: Any) -> None:
    import_catalog(
        bike_shop,
        "# Help\n\n## Returns\nUnused gear can be returned within 30 days. Used items cannot be returned.\n\n"
        "## Opening hours\nMonday to Friday 9:00-18:00.\n",
        filename="help.md",
        embed=True,
    )
    question = "return policy for the kids bike 20 inch"
    plain = search(bike_shop, question, limit=4)
    assert [hit.kind for hit in plain] == ["item"] * 4  # every bike beats the passage
    kept = search_with(bike_shop, question, limit=4, min_passages=1)
    assert [hit.kind for hit in kept] == ["item"] * 3 + ["chunk"]
    assert kept[:3] == plain[:3]  # the weakest item gave its place, the order is the score's
    assert kept[3].title == "Help: Help > Returns"
    assert [hit.kind for hit in search_with(bike_shop, question, limit=4, min_passages=2)].count("chunk") == 2
    # No chunk matched (documents left out): the items fill every place.
    assert search_with(bike_shop, question, limit=4, min_passages=1, include_chunks=False) == plain


def search_with(business: Business, query: str, **kwargs: Any) -> list[SearchHit]:
    prepared = prepare_search(business, query, **kwargs)
    assert prepared is not None
    return run_search(prepared)


def _random_unit_vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_small_tenant_among_a_large_one_gets_full_results_with_the_hnsw_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big, small = BusinessFactory(), BusinessFactory()
    Item.objects.bulk_create(
        Item(business=big, external_id=f"B{i}", title=f"big item {i}", embedding=vector.tolist())
        for i, vector in enumerate(_random_unit_vectors(3000, seed=1))
    )
    Item.objects.bulk_create(
        Item(business=small, external_id=f"S{i}", title=f"small item {i}", embedding=vector.tolist())
        for i, vector in enumerate(_random_unit_vectors(12, seed=2))
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalogs_item")
    monkeypatch.setattr(prepare, "EXACT_SCAN_MAX_ROWS", 0)  # force the HNSW plan for this tenant size
    assert vector_plan(small) == "hnsw"
    query = _random_unit_vectors(1, seed=3)[0].tolist()
    # With statistics, the planner itself prefers the business index for a tenant this small; take sorting
    # away so that it uses the HNSW index, the plan a large tenant gets, whose filter is the risk here.
    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")

    hits = search(small, "anything", limit=10, query_vector=query, mode="vector")
    assert len(hits) == 10 and all(hit.external_id.startswith("S") for hit in hits)
    all_small = search(small, "anything", limit=50, query_vector=query, mode="vector")
    assert len(all_small) == 12

    # The plan really is the HNSW index (the exact plan would read the business index instead)...
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT id FROM catalogs_item WHERE business_id = %s AND is_active "
            "ORDER BY embedding <=> %s::vector LIMIT 40",
            [small.pk, str(query)],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "item_embedding_hnsw" in plan
    # ...and without iterative scan it starves: ef_search=40 candidates hold few of the small tenant's rows.
    with connection.cursor() as cursor:
        cursor.execute("SET hnsw.iterative_scan = off")
        cursor.execute("SET hnsw.ef_search = 40")
        cursor.execute(
            "SELECT count(*) FROM (SELECT id FROM catalogs_item WHERE business_id = %s AND is_active "
            "ORDER BY embedding <=> %s::vector LIMIT 40) s",
            [small.pk, str(query)],
        )
        starved = cursor.fetchone()[0]
        cursor.execute("RESET hnsw.iterative_scan; RESET hnsw.ef_search; RESET enable_sort")
    assert starved < 12


def test_exact_plan_for_small_tenants(bike_shop: Business) -> None:
    assert vector_plan(bike_shop) == "exact"


def test_search_catalog_command(bike_shop: Business) -> None:
    out = io.StringIO()
    call_command(
        "search_catalog", "--business", "velo", "--limit", "2", "--json", "Ortlieb handlebar bag", stdout=out
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    assert (lines[0]["external_id"], lines[0]["title"]) == ("VV-BG-056", "Handlebar bag 7 l")
    assert isinstance(lines[0]["score"], float)

    out = io.StringIO()
    call_command("search_catalog", "--business", "velo", "--limit", "1", "brass bell", stdout=out)
    assert out.getvalue().startswith(" 1. ")
    assert "VV-PT-074  Bell brass" in out.getvalue()


def test_empty_query_returns_nothing(bike_shop: Business) -> None:
    assert search(bike_shop, "   ", limit=10) == []
    assert search(bike_shop, "bell", limit=0) == []


def test_a_prepared_search_run_with_the_callers_vector_is_the_same_search(bike_shop: Business) -> None:
    question = "a bag for the handlebar"
    vector = embed_query(question)
    words._lexemes_of.clear()
    with CaptureQueriesContext(connection) as first:
        prepared = prepare_search(bike_shop, question, limit=5)
    with CaptureQueriesContext(connection) as again:
        prepare_search(bike_shop, question, limit=5)

    # The words' lexemes are remembered: the second preparation only counts them in the catalog.
    def stemming(queries: CaptureQueriesContext) -> list[str]:
        return [q["sql"] for q in queries.captured_queries if "to_tsvector('english', w)" in q["sql"]]

    assert len(stemming(first)) == 1 and stemming(again) == []
    assert len(again.captured_queries) == 1
    assert prepared is not None
    assert ids(run_search(prepared, vector)) == ids(search(bike_shop, question, limit=5))
    assert prepare_search(bike_shop, "   ") is None


def test_the_lexical_score_reads_each_word_of_postgres_tsvector_text() -> None:
    # The tsvector's own text form: weights, a lexeme with a quote, lexemes that start or end with another.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (setweight(to_tsvector('simple', 'stovetop lamp'), 'A') || "
            "setweight(to_tsvector('simple', 'stove'), 'B') || to_tsvector('simple', 'stove lamp'))::text, "
            "$$'o''stove':1A 'stove''s':2A 'x':3$$::tsvector::text"
        )
        weighted, quoted = cursor.fetchone()
    assert fusion.lexical_score(weighted, {"stove": 1.0}) == pytest.approx(0.6)  # its best field: B
    assert fusion.lexical_score(weighted, {"lamp": 1.0, "stove": 3.0}) == pytest.approx((1.0 + 1.8) / 4)
    assert fusion.lexical_score(weighted, {"stovetop": 1.0, "top": 1.0}) == pytest.approx(0.5)
    # "stove" is inside two longer lexemes here, and is not a word of its own.
    assert fusion.lexical_score(quoted, {"stove": 1.0}) == 0.0
    assert fusion.lexical_score(quoted, {"stove's": 1.0, "x": 1.0}) == pytest.approx((1.0 + 0.2) / 2)
    assert fusion.lexical_score("", {"stove": 1.0}) == 0.0
