"""REST API v1 of the catalog (docs/api.md): items, the hybrid search, documents and FAQs, imports.

Every operation works inside the business of its API key (``businesses.api_auth``): another business's
item, document or import answers 404, exactly like a missing one. Reads need the ``read`` scope, writes
``write``. The routes are mounted on the one API by ``config.api``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Field, Form, Query, Schema, Status
from ninja.files import UploadedFile
from ninja.params import functions as param_functions

from businesses.api_auth import READ, WRITE, api_business
from catalogs import import_selectors, selectors
from catalogs.import_selectors import ImportStatus
from catalogs.importers import FORMAT_ALIASES, FORMATS
from catalogs.models import Availability, Document, Import, Item
from catalogs.search import search
from catalogs.search.filters import SearchFilters
from catalogs.services.documents import document_delete
from catalogs.services.imports import ImportRejected, document_import_text, import_start
from catalogs.services.items import ItemRejected, item_retire, item_upsert
from common.idempotency import IdempotentRouter
from common.pagination import cursor_paginated
from common.problems import Problem, field_errors

router = IdempotentRouter(tags=["catalog"])

API_PREFIX = "/api/v1"
URL_MAX_CHARS = 2000  # Import.source_url


# --- Items ----------------------------------------------------------------------------------------------------


class ItemOut(Schema):
    id: int
    external_id: str
    item_group_id: str
    title: str
    description: str
    price: Decimal | None
    sale_price: Decimal | None
    currency: str
    availability: str
    brand: str
    category: str
    url: str
    image_url: str
    attributes: dict[str, Any]
    variants: list[dict[str, Any]]
    is_active: bool = Field(
        description="False: retired (by a full sync or DELETE); never offered by the agent"
    )
    created_at: datetime
    updated_at: datetime


class ItemIn(Schema):
    """An item as a client writes it; the same checks as an imported row (docs/catalogs.md)."""

    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=20000)
    price: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)
    sale_price: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)
    currency: str = Field("", pattern=r"^([A-Za-z]{3})?$")
    availability: Availability = Availability.IN_STOCK
    brand: str = Field("", max_length=200)
    category: str = Field("", max_length=500)
    url: str = Field("", max_length=2000, description="http(s) link, or a path on this site")
    image_url: str = Field("", max_length=2000)
    item_group_id: str = Field("", max_length=200, description="Variants of one product share it")
    attributes: dict[str, str] = Field(
        default_factory=dict, max_length=50, description="color, size, material, gtin... as text"
    )


class ItemFilters(Schema):
    q: str = Field("", max_length=200, description="A substring of the title, SKU or brand")
    availability: Availability | None = None
    category: str = Field("", max_length=500)
    include_retired: bool = False


@router.get("/items", response=list[ItemOut], auth=READ, summary="List items")
@cursor_paginated
def items_list(request: HttpRequest, filters: Query[ItemFilters]) -> Any:
    return selectors.items_browse(
        api_business(request),
        query=filters.q,
        availability=filters.availability or "",
        category=filters.category,
        include_retired=filters.include_retired,
    )


@router.get("/items/{external_id}", response=ItemOut, auth=READ, summary="Get an item by its id")
def item_get(request: HttpRequest, external_id: str) -> Item:
    item = selectors.item_by_external_id(api_business(request), external_id)
    if item is None:
        raise Http404
    return item


@router.put(
    "/items/{external_id}",
    response={200: ItemOut, 201: ItemOut},
    auth=WRITE,
    summary="Create or replace an item",
)
def item_put(request: HttpRequest, external_id: str, payload: ItemIn) -> Status[Item]:
    if len(external_id) > 200:
        raise Problem(422, "the id is longer than 200 characters", code="validation_failed")
    # As text, like a feed's cells: the import's row checks read them (catalogs.importers.base.build_item).
    fields = payload.dict(exclude={"attributes", "price", "sale_price", "availability"})
    fields["price"] = "" if payload.price is None else str(payload.price)
    fields["sale_price"] = "" if payload.sale_price is None else str(payload.sale_price)
    fields["availability"] = payload.availability.value
    try:
        result = item_upsert(
            business=api_business(request),
            external_id=external_id,
            fields=fields,
            attributes=payload.attributes,
        )
    except ItemRejected as exc:
        raise Problem(
            422,
            "the item cannot be stored",
            code="validation_failed",
            errors=[{"field": f"body.{exc.field}", "message": str(exc)}],
        ) from exc
    return Status(201 if result.created else 200, result.item)


@router.delete("/items/{external_id}", response={204: None}, auth=WRITE, summary="Retire an item")
def item_delete(request: HttpRequest, external_id: str) -> Status[None]:
    if item_retire(business=api_business(request), external_id=external_id) is None:
        raise Http404
    return Status(204, None)


class SearchHitOut(Schema):
    kind: Literal["item", "chunk"]
    item_id: int | None
    chunk_id: int | None
    external_id: str
    title: str
    text: str
    price: Decimal | None
    sale_price: Decimal | None
    currency: str
    availability: str
    url: str
    image_url: str
    score: float


class SearchQuery(Schema):
    q: str = Field(min_length=1, max_length=500, description="A customer's question or keywords")
    limit: int = Field(10, ge=1, le=50)
    in_stock: bool = False
    min_price: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)
    max_price: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)
    category: str | None = Field(None, max_length=500)
    include_documents: bool = Field(True, description="Also search FAQ and policy passages")


@router.get(
    "/search",
    response=list[SearchHitOut],
    auth=READ,
    summary="Search items and documents as the agent does (hybrid: vectors, full text, trigrams)",
)
def catalog_search(request: HttpRequest, query: Query[SearchQuery]) -> Any:
    filters = SearchFilters(
        in_stock_only=query.in_stock,
        min_price=query.min_price,
        max_price=query.max_price,
        category=query.category or None,
    )
    return search(
        api_business(request),
        query.q,
        filters=filters,
        limit=query.limit,
        include_chunks=query.include_documents,
    )


# --- Documents and FAQs ---------------------------------------------------------------------------------------


class DocumentOut(Schema):
    id: int
    title: str
    kind: str
    filename: str
    is_active: bool
    chunk_count: int
    created_at: datetime
    updated_at: datetime


class ChunkOut(Schema):
    ordinal: int
    heading: str
    text: str


class DocumentDetailOut(DocumentOut):
    chunks: list[ChunkOut]

    @staticmethod
    def resolve_chunks(obj: Document) -> list[Any]:
        return list(obj.chunks.order_by("ordinal").only("ordinal", "heading", "text"))


class DocumentIn(Schema):
    title: str = Field(min_length=1, max_length=300, description="The same title replaces that document")
    text: str = Field(min_length=1, max_length=1_000_000)
    format: Literal["markdown", "text"] = Field(
        "markdown", description="markdown: each heading starts a passage the agent may quote"
    )
    kind: Document.Kind = Document.Kind.FAQ


@router.get("/documents", response=list[DocumentOut], auth=READ, summary="List documents and FAQs")
@cursor_paginated
def documents_list(request: HttpRequest) -> Any:
    return selectors.documents_list(api_business(request))


@router.get("/documents/{int:document_id}", response=DocumentDetailOut, auth=READ, summary="Get a document")
def document_get(request: HttpRequest, document_id: int) -> Document:
    document = selectors.document_of(api_business(request), document_id)
    if document is None:
        raise Http404
    return document


@router.post(
    "/documents",
    response={200: DocumentDetailOut, 201: DocumentDetailOut},
    auth=WRITE,
    summary="Create (or replace) a document from Markdown or text",
)
def document_create(request: HttpRequest, payload: DocumentIn) -> Status[Document]:
    business = api_business(request)
    result = document_import_text(
        business=business,
        document={
            "title": payload.title,
            "text": payload.text,
            "format": payload.format,
            "kind": payload.kind.value,
        },
    )
    if result.document is None:
        raise Problem(
            422, result.imp.error_message or "the text could not be imported", code="validation_failed"
        )
    found = selectors.document_of(business, result.document.pk)
    assert found is not None
    return Status(201 if result.created else 200, found)


@router.delete("/documents/{int:document_id}", response={204: None}, auth=WRITE, summary="Delete a document")
def document_remove(request: HttpRequest, document_id: int) -> Status[None]:
    if not document_delete(business=api_business(request), document_id=document_id):
        raise Http404
    return Status(204, None)


# --- Imports (a file; docs/catalogs.md) ----------------------------------------------------------------------


@dataclass
class ImportForm:
    """The multipart fields of an upload, validated."""

    mode: str = Import.Mode.UPSERT
    format: str | None = None
    sheet: str = ""
    mapping: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> tuple[ImportForm | None, dict[str, str]]:
        errors: dict[str, str] = {}
        form = cls()
        mode = data.get("mode") or Import.Mode.UPSERT
        if mode not in Import.Mode.values:
            errors["mode"] = f"one of {', '.join(Import.Mode.values)}"
        form.mode = mode
        # A full sync retires every item the file does not list: the caller says so explicitly.
        confirmed = str(data.get("confirm_full_sync") or "").lower() in ("1", "true", "yes")
        if mode == Import.Mode.FULL and not confirmed:
            errors["confirm_full_sync"] = (
                "a full sync retires every item missing from the file: send confirm_full_sync=true"
            )
        fmt = (data.get("format") or "").strip().lower() or None
        if fmt and fmt not in FORMATS and fmt not in FORMAT_ALIASES:
            errors["format"] = f"one of {', '.join(FORMATS)}"
        form.format = fmt
        form.sheet = (data.get("sheet") or "")[:100]
        raw_mapping = data.get("mapping") or ""
        if raw_mapping:
            try:
                mapping = json.loads(raw_mapping)
            except json.JSONDecodeError:
                mapping = None
            if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
            ):
                errors["mapping"] = 'a JSON object {"source column": "field"}'
            else:
                form.mapping = mapping
        return (None if errors else form), errors


class ImportFields(Schema):
    mode: str = Field("upsert", description="upsert, or full (retires the items the file does not list)")
    confirm_full_sync: str = Field("", description="true: required with mode=full")
    format: str = Field("", description=f"Detected when empty; one of {', '.join(FORMATS)}")
    sheet: str = Field("", description="XLSX: the sheet to read (default: the first)")
    mapping: str = Field("", description='JSON {"source column": "field"} for unusual column names')
    url: str = Field(
        "",
        max_length=URL_MAX_CHARS,
        description="Instead of a file: an http(s) address the worker fetches it from (public addresses only)",
    )


class ImportCreated(Schema):
    id: int
    state: str
    status_url: str


# The file is optional to django-ninja: the view answers its absence with a 400, like the other fields.
OPTIONAL_FILE = param_functions.File(None)


def _import_url(import_id: int) -> str:
    return f"{API_PREFIX}/catalog/imports/{import_id}"


@router.post(
    "/catalog/imports",
    response={202: ImportCreated},
    auth=WRITE,
    summary="Import a catalog or FAQ file, uploaded or fetched from a URL (runs in the background)",
)
def import_create(
    request: HttpRequest,
    response: HttpResponse,
    fields: Form[ImportFields],
    file: UploadedFile | None = OPTIONAL_FILE,
) -> Status[dict[str, Any]]:
    source_url = fields.url.strip()
    if (file is None) == (not source_url):
        message = "send a file (multipart field 'file') or a url to fetch it from, not both"
        raise Problem(
            400,
            "invalid request",
            code="validation_failed",
            errors=[{"field": "form.file", "message": message}],
        )
    form, errors = ImportForm.parse(fields.dict(exclude={"url"}))
    if form is None:
        raise Problem(
            400, "invalid request", code="validation_failed", errors=field_errors(errors, prefix="form")
        )
    if file is not None and file.size is not None and file.size > settings.CATALOG_MAX_UPLOAD_BYTES:
        raise Problem(
            413,
            f"the file is over the limit of {settings.CATALOG_MAX_UPLOAD_BYTES:,} bytes",
            code="too_large",
        )
    try:
        # A url is checked here (scheme, address) and fetched by the worker (common.safe_fetch).
        imp = import_start(
            business=api_business(request),
            upload=file,
            url=source_url or None,
            filename=file.name if file is not None else None,
            mode=form.mode,
            format=form.format,
            mapping=form.mapping,
            sheet=form.sheet,
        )
    except ImportRejected as exc:
        raise Problem(400, str(exc), code="import_rejected") from exc
    url = _import_url(imp.pk)
    response["Location"] = url
    return Status(202, {"id": imp.pk, "state": imp.state, "status_url": url})


@router.get(
    "/catalog/imports/{int:import_id}", response=ImportStatus, auth=READ, summary="An import's status"
)
def import_detail(request: HttpRequest, import_id: int) -> ImportStatus:
    return import_selectors.import_status(import_selectors.import_get(api_business(request), import_id))


@router.get(
    "/catalog/imports/{int:import_id}/errors.csv",
    auth=READ,
    summary="An import's bad rows as CSV",
    response={200: str},
    openapi_extra={"responses": {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}},
)
def import_errors_csv(request: HttpRequest, import_id: int) -> HttpResponse:
    imp = import_selectors.import_get(api_business(request), import_id)
    response = HttpResponse(
        import_selectors.import_error_report_csv(imp), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="import-{imp.pk}-errors.csv"'
    return response
