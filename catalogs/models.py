"""A business's catalog: items (typed product rows), documents split into chunks (FAQs, policies), imports.

Every model has a ``business`` foreign key; every read goes through a selector that takes the business first.
Vectors are ``EMBEDDING_DIMENSIONS`` floats; ``embedding_model`` names the backend that produced each one so
that a model change can be detected and re-embedded.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Concat
from pgvector.django import HnswIndex, VectorField

# The REST API's schema (pydantic) reads it, and pydantic needs typing_extensions' TypedDict before 3.12.
from typing_extensions import TypedDict

from businesses.models import Business
from catalogs.links import ABSOLUTE_SQL_REGEX, ROOT_RELATIVE_SQL_REGEX

EMBEDDING_DIMENSIONS = 384

# Attribute keys worth putting into the text that is embedded (and shown to the agent).
SEARCH_ATTRIBUTE_KEYS = ("color", "size", "material", "gender", "age_group", "pattern", "condition")


class Trigrams(models.Func):
    """``catalogs_trigrams(text) -> text[]``: pg_trgm-style word trigrams (SQL function, migration 0002).

    pg_trgm is not available in the embedded Postgres; this immutable function gives the same tokens, and a
    GIN index over the array serves the search's trigram leg (catalogs/search/).
    """

    function = "catalogs_trigrams"
    output_field = ArrayField(models.TextField())


class Availability(models.TextChoices):
    IN_STOCK = "in_stock", "In stock"
    OUT_OF_STOCK = "out_of_stock", "Out of stock"
    PREORDER = "preorder", "Preorder"
    BACKORDER = "backorder", "Backorder"
    DISCONTINUED = "discontinued", "Discontinued"


class Item(models.Model):
    """One product (or one variant group, for Shopify exports) of a business's catalog."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="items")
    external_id = models.CharField(max_length=200)
    # Variants of one product share an item_group_id (Meta/Google) or a Shopify handle.
    item_group_id = models.CharField(max_length=200, blank=True)
    title = models.CharField(max_length=500)
    description = models.TextField(blank=True)  # plain text, HTML stripped on import
    price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    sale_price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    availability = models.CharField(
        max_length=20, choices=Availability.choices, default=Availability.IN_STOCK
    )
    brand = models.CharField(max_length=200, blank=True)
    category = models.CharField(max_length=500, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    image_url = models.URLField(max_length=2000, blank=True)
    # color, size, material, gtin, mpn, condition, gender, ... (strings), as the feed gave them.
    attributes = models.JSONField(default=dict, blank=True)
    # Shopify: one entry per variant row of the handle ({"sku", "title", "options", "price", ...}).
    variants = models.JSONField(default=list, blank=True)
    # False: retired by a full sync (absent from the last full file); never retrieved.
    is_active = models.BooleanField(default=True)
    # SHA-256 of the normalised fields: an unchanged hash means nothing to write or re-embed.
    content_hash = models.CharField(max_length=64, blank=True)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    embedding_model = models.CharField(max_length=200, blank=True)
    # Search columns (owned by catalogs/search/), computed by Postgres on every write: full text with
    # title > brand/category > description weights, and trigrams of title and SKU for typos and SKU lookups.
    search_vector = models.GeneratedField(
        expression=SearchVector("title", weight="A", config="english")
        + SearchVector("brand", "category", weight="B", config="english")
        + SearchVector("description", weight="C", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    search_trigrams = models.GeneratedField(
        expression=Trigrams(
            Concat("title", models.Value(" "), "external_id", output_field=models.TextField())
        ),
        output_field=ArrayField(models.TextField()),
        db_persist=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["business", "external_id"], name="item_unique_external_id"),
            # Only http(s) links and paths on this server (catalogs/links.py), whatever writes the row.
            models.CheckConstraint(
                condition=Q(url="")
                | Q(url__iregex=ABSOLUTE_SQL_REGEX)
                | Q(url__regex=ROOT_RELATIVE_SQL_REGEX),
                name="item_url_http_only",
            ),
            models.CheckConstraint(
                condition=Q(image_url="")
                | Q(image_url__iregex=ABSOLUTE_SQL_REGEX)
                | Q(image_url__regex=ROOT_RELATIVE_SQL_REGEX),
                name="item_image_url_http_only",
            ),
        ]
        indexes = [
            models.Index(fields=["business", "is_active"], name="item_business_active"),
            GinIndex(fields=["search_vector"], name="item_search_vector"),
            GinIndex(fields=["search_trigrams"], name="item_search_trigrams"),
            HnswIndex(
                name="item_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_id}: {self.title}"

    @property
    def parent_external_id(self) -> str:
        return self.item_group_id

    def search_text(self) -> str:
        return item_search_text(**{name: getattr(self, name) for name in ITEM_TEXT_FIELDS})


def item_embedding_text(
    *, title: str, brand: str = "", category: str = "", description: str = "", max_chars: int = 2000
) -> str:
    """The text an item's vector is computed from: "title. brand. category. description".

    One definition for the importer and the search benchmark: the title leads because the model truncates
    at 256 tokens, and brand and category give short titles the context a customer's words refer to.
    """
    parts = [part.strip().rstrip(".") for part in (title, brand, category) if part and part.strip()]
    text = ". ".join(parts)
    if description and description.strip():
        text = f"{text}. {description.strip()}" if text else description.strip()
    return text[:max_chars]


# What ``item_search_text`` reads: an item whose values of these did not change keeps its vector.
ITEM_TEXT_FIELDS = ("title", "brand", "category", "description", "attributes", "variants")


def item_search_text(
    *,
    title: str,
    brand: str = "",
    category: str = "",
    description: str = "",
    attributes: dict[str, object] | None = None,
    variants: list[dict[str, object]] | None = None,
) -> str:
    """The text that is embedded for an item: "title. brand. category. <key attributes>. description".

    Built on ``item_embedding_text`` (one definition shared with the search benchmark);
    the attributes a customer names (colour, size, material...) go before the description because the
    model truncates long inputs.
    """
    attrs = attributes or {}
    attr_parts = [f"{k.replace('_', ' ')}: {attrs[k]}" for k in SEARCH_ATTRIBUTE_KEYS if attrs.get(k)]
    options: set[str] = set()
    for variant in variants or []:
        values = variant.get("options")
        if isinstance(values, dict):
            options.update(str(v) for v in values.values() if v and v != "Default Title")
    if options:
        attr_parts.append("options: " + ", ".join(sorted(options)[:30]))
    body = "; ".join(attr_parts)
    if description and description.strip():
        body = f"{body}. {description.strip()}" if body else description.strip()
    return item_embedding_text(title=title, brand=brand, category=category, description=body)


class Document(models.Model):
    """A FAQ, policy or page that the agent may quote; its text lives in chunks."""

    class Kind(models.TextChoices):
        FAQ = "faq", "FAQ"
        POLICY = "policy", "Policy"
        PAGE = "page", "Page"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.FAQ)
    # Re-importing a file of the same name replaces the document's chunks.
    filename = models.CharField(max_length=300)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["business", "filename"], name="document_unique_filename")
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    heading = models.CharField(max_length=500, blank=True)
    text = models.TextField()
    content_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    embedding_model = models.CharField(max_length=200, blank=True)
    search_vector = models.GeneratedField(
        expression=SearchVector("heading", weight="A", config="english")
        + SearchVector("text", weight="C", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_unique_ordinal")]
        indexes = [
            GinIndex(fields=["search_vector"], name="chunk_search_vector"),
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal} {self.heading}"

    def search_text(self) -> str:
        return f"{self.heading}. {self.text}" if self.heading else self.text


def import_upload_path(instance: Import, filename: str) -> str:
    return f"imports/{instance.business_id}/{filename}"


class ImportCountsJson(TypedDict):
    """What an import did to the catalog (``Import.counts``)."""

    created: int
    updated: int
    unchanged: int
    retired: int
    failed: int
    embedded: int


class FeedSource(models.Model):
    """A URL the business's catalog is synced from on a schedule (catalogs.services.feeds).

    Every run fetches it (a conditional GET where the kind allows it) and, when the content changed, imports
    it in full-sync mode through the ordinary pipeline: the run is an ``Import`` with ``feed`` set.
    """

    class Kind(models.TextChoices):
        FEED = "feed", "Meta or Google product feed (CSV, TSV or XML)"
        SHOPIFY = "shopify", "Shopify store (products.json)"
        WOOCOMMERCE = "woocommerce", "WooCommerce store (Store API)"

    class Outcome(models.TextChoices):
        """What the last run did (the import it started says how that went)."""

        NONE = "", "Not run yet"
        IMPORTED = "imported", "Changed: imported"
        NOT_MODIFIED = "not_modified", "Not modified (304)"
        UNCHANGED = "unchanged", "Same content as last time"
        BUSY = "busy", "Skipped: the previous import is still running"
        FAILED = "failed", "Fetch failed"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="feeds")
    url = models.URLField(max_length=2000)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.FEED)
    interval_minutes = models.PositiveIntegerField(default=60)
    # A run that would retire more than this share of the active items is held for the owner to confirm.
    shrink_threshold_percent = models.PositiveSmallIntegerField(default=30)
    is_active = models.BooleanField(default=True)
    next_run_at = models.DateTimeField()
    # Lease of the run in progress: a run whose worker died is taken over after FEED_RUN_LEASE_SECONDS.
    running_since = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["business", "url"], name="feed_unique_url")]
        indexes = [models.Index(fields=["is_active", "next_run_at"], name="feed_due")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.url}"


class Import(models.Model):
    """One upload of a catalog or FAQ file and the run that applied it."""

    class Mode(models.TextChoices):
        UPSERT = "upsert", "Upsert (add and update)"
        FULL = "full", "Full sync (also retire missing items)"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        # A feed's run that would retire too much of the catalog: nothing applied, the owner decides.
        HELD = "held", "Held for confirmation"
        DISCARDED = "discarded", "Discarded"

    class Phase(models.TextChoices):
        QUEUED = "queued", "Queued"
        READING = "reading", "Reading"
        VALIDATING = "validating", "Validating"
        WRITING = "writing", "Writing"
        EMBEDDING = "embedding", "Embedding"
        DONE = "done", "Done"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="imports")
    file = models.FileField(upload_to=import_upload_path, max_length=500)
    original_filename = models.CharField(max_length=300)
    # Detected (or given) format: meta_csv, csv, tsv, json, jsonl, xlsx, rss, atom, markdown, text, pdf, faq_csv.
    format = models.CharField(max_length=20, blank=True)
    requested_format = models.CharField(max_length=20, blank=True)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.UPSERT)
    # Explicit column mapping {source column: canonical field}, and the XLSX sheet name.
    mapping = models.JSONField(default=dict, blank=True)
    sheet = models.CharField(max_length=100, blank=True)
    embed = models.BooleanField(default=True)
    # Fetched from this URL (an import from a URL, or a feed's run) rather than uploaded.
    source_url = models.URLField(max_length=2000, blank=True)
    feed = models.ForeignKey(
        FeedSource, null=True, blank=True, on_delete=models.SET_NULL, related_name="imports"
    )
    # What the fetch answered: a feed's next conditional GET sends these back; the hash spots a same body.
    source_etag = models.CharField(max_length=500, blank=True)
    source_last_modified = models.CharField(max_length=100, blank=True)
    source_sha256 = models.CharField(max_length=64, blank=True)
    # Full sync only: held (state HELD) rather than applied when it would retire more than this percentage
    # of the business's active items; None applies whatever it retires.
    retire_limit_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    phase = models.CharField(max_length=12, choices=Phase.choices, default=Phase.QUEUED)
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    retired_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    embedded_count = models.PositiveIntegerField(default=0)
    # [{"row": 12, "column": "price", "reason": "..."}], capped (see importers.MAX_ERRORS_KEPT).
    error_report = models.JSONField(default=list, blank=True)
    # Whole-file failure: one message, nothing changed.
    error_message = models.TextField(blank=True)
    # Seconds per phase: {"read_write": 3.2, "embed": 10.1, "total": 13.5}.
    timings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Lease: a running import whose claim is older than the lease may be taken over (crashed worker).
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["business", "-created_at"], name="import_business_created")]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.original_filename}, {self.state})"

    @property
    def is_finished(self) -> bool:
        """Whether the run has ended (a held import has: confirming it queues it again)."""
        return self.state in (self.State.SUCCEEDED, self.State.FAILED, self.State.HELD, self.State.DISCARDED)

    def counts(self) -> ImportCountsJson:
        """What the import did to the catalog, as the API, the command and the admin report it."""
        return {
            "created": self.created_count,
            "updated": self.updated_count,
            "unchanged": self.unchanged_count,
            "retired": self.retired_count,
            "failed": self.failed_count,
            "embedded": self.embedded_count,
        }
