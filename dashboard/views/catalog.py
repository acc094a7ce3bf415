"""Catalog: upload with live progress, import history and error reports, items browser, search preview."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from businesses.models import Membership
from catalogs import selectors as catalog_selectors
from catalogs.import_selectors import import_error_report_csv
from catalogs.models import Availability, Import
from catalogs.services.imports import ImportRejected, import_start
from dashboard import selectors
from dashboard.forms import ItemFilterForm, SearchPreviewForm, UploadForm, UrlImportForm
from dashboard.permissions import BusinessRequest, member_view


def _catalog_context(request: BusinessRequest, **extra: object) -> dict[str, object]:
    business = request.business
    return {
        "upload_form": UploadForm(),
        "url_form": UrlImportForm(),
        "imports": selectors.imports_recent(business),
        "counts": selectors.catalog_counts(business),
        "search_form": SearchPreviewForm(),
        **extra,
    }


@member_view()
@require_GET
def catalog(request: BusinessRequest) -> HttpResponse:
    return render(request, "dashboard/catalog.html", _catalog_context(request))


@member_view()
@require_POST
def catalog_upload(request: BusinessRequest) -> HttpResponse:
    """Start an import. Answers JSON to the drag-and-drop script, a redirect to a plain form post."""
    business = request.business
    membership = request.membership
    form = UploadForm(request.POST, request.FILES)
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    if not _may_use_mode(membership, request.POST.get("mode")):
        if wants_json:
            message = "Only an owner can run a full sync."
            return JsonResponse(
                {"errors": {"mode": [{"message": message, "code": "owner_only"}]}}, status=403
            )
        raise PermissionDenied("Only an owner can run a full sync.")
    if not form.is_valid():
        if wants_json:
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return render(
            request, "dashboard/catalog.html", _catalog_context(request, upload_form=form), status=400
        )
    try:
        imp = import_start(
            business=business, upload=form.cleaned_data["file"], mode=form.cleaned_data["mode"]
        )
    except ImportRejected as exc:
        form.add_error("file", str(exc))
        if wants_json:
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return render(
            request, "dashboard/catalog.html", _catalog_context(request, upload_form=form), status=400
        )
    if wants_json:
        return JsonResponse(selectors.import_status(imp), status=201)
    return redirect("dashboard:catalog_import", slug=business.slug, import_id=imp.pk)


def _may_use_mode(membership: Membership, mode: str | None) -> bool:
    """Staff add and update items; retiring the whole catalog is the owner's decision."""
    return mode != Import.Mode.FULL or membership.role == Membership.Role.OWNER


@member_view()
@require_POST
def catalog_import_url(request: BusinessRequest) -> HttpResponse:
    """Start an import of a file on the web: it is fetched by the worker (``common.safe_fetch``)."""
    business = request.business
    if not _may_use_mode(request.membership, request.POST.get("mode")):
        raise PermissionDenied("Only an owner can run a full sync.")
    form = UrlImportForm(request.POST)
    if form.is_valid():
        try:
            imp = import_start(
                business=business, url=form.cleaned_data["url"], mode=form.cleaned_data["mode"]
            )
        except ImportRejected as exc:
            form.add_error("url", str(exc))
        else:
            return redirect("dashboard:catalog_import", slug=business.slug, import_id=imp.pk)
    return render(request, "dashboard/catalog.html", _catalog_context(request, url_form=form), status=400)


@member_view(import_id="import")
@require_GET
def catalog_import(request: BusinessRequest, import_id: int) -> HttpResponse:
    business = request.business
    imp = selectors.import_or_404(business, import_id)
    return render(
        request,
        "dashboard/catalog_import.html",
        {"imp": imp, "status": selectors.import_status(imp), "errors_preview": imp.error_report[:20]},
    )


@member_view(import_id="import")
@require_GET
def catalog_import_status(request: BusinessRequest, import_id: int) -> JsonResponse:
    """Polled by the progress bar when the websocket is not available (and once on page load)."""
    business = request.business
    return JsonResponse(selectors.import_status(selectors.import_or_404(business, import_id)))


@member_view(import_id="import")
@require_GET
def catalog_import_errors(request: BusinessRequest, import_id: int) -> HttpResponse:
    """The import's bad rows as CSV: row, column, reason (and the whole-file error, if any)."""
    business = request.business
    imp = selectors.import_or_404(business, import_id)
    response = HttpResponse(import_error_report_csv(imp), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="import-{imp.pk}-errors.csv"'
    return response


@member_view()
@require_GET
def catalog_items(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = ItemFilterForm(request.GET or None, categories=selectors.item_categories(business))
    filters = form.cleaned_data if form.is_valid() else {}
    items = catalog_selectors.items_browse(
        business,
        query=filters.get("q") or "",
        availability=filters.get("availability") or "",
        category=filters.get("category") or "",
        include_retired=bool(filters.get("retired")),
    )
    page = Paginator(items, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboard/catalog_items.html",
        {"form": form, "page": page, "query": query.urlencode(), "availability": Availability},
    )


@member_view(item_id="item")
@require_GET
def catalog_item(request: BusinessRequest, item_id: int) -> HttpResponse:
    business = request.business
    return render(request, "dashboard/catalog_item.html", {"item": selectors.item_or_404(business, item_id)})


@member_view()
@require_GET
def catalog_search(request: BusinessRequest) -> HttpResponse:
    """ "What would the agent find?": the real retrieval for a question, with each hit's score parts."""
    business = request.business
    form = SearchPreviewForm(request.GET or None)
    hits = None
    if form.is_valid():
        from catalogs.search import search

        hits = search(business, form.cleaned_data["q"], limit=form.cleaned_data.get("limit") or 10)
    if request.headers.get("HX-Request") or request.GET.get("partial"):
        return render(request, "dashboard/_search_hits.html", {"hits": hits, "form": form})
    return render(request, "dashboard/catalog_search.html", {"hits": hits, "search_form": form})
