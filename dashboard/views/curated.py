"""Curated answers: the business's right answers (list with search, create, edit, delete, CSV import and
export), and "Write the right answer" from a reply in the inbox or the playground (the create form, filled)."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.models import CuratedAnswer
from agents.selectors import curated_answer_of, curated_answers_csv, curated_answers_list
from agents.services import (
    CuratedAnswerInvalid,
    curated_answer_create,
    curated_answer_delete,
    curated_answer_update,
    curated_answers_import,
)
from dashboard import selectors
from dashboard.forms import CuratedAnswerForm, CuratedImportForm
from dashboard.permissions import BusinessRequest, member_view

# Shown on the page after an import; the whole report is the import's answer, not stored.
IMPORT_ERRORS_SHOWN = 50


def _list_page(
    request: BusinessRequest, *, import_form: CuratedImportForm | None = None, status: int = 200
) -> HttpResponse:
    query = (request.GET.get("q") or "").strip()[:200]
    page = Paginator(curated_answers_list(request.business, query=query), 50).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "dashboard/curated_answers.html",
        {"page": page, "q": query, "import_form": import_form or CuratedImportForm()},
        status=status,
    )


@member_view()
@require_GET
def curated_answers(request: BusinessRequest) -> HttpResponse:
    return _list_page(request)


def _form_page(
    request: BusinessRequest,
    form: CuratedAnswerForm,
    *,
    curated: CuratedAnswer | None = None,
    source: int | None = None,
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "dashboard/curated_answer_form.html",
        {"form": form, "curated": curated, "source": source},
        status=status,
    )


def _source_id(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None


@member_view()
@require_http_methods(["GET", "POST"])
def curated_answer_new(request: BusinessRequest) -> HttpResponse:
    """The create form. ``?message=<id>`` (an agent reply of this business) fills it with the customer's
    question and the reply, to be corrected; ``?question=`` and ``?answer=`` fill it with text."""
    business = request.business
    source = _source_id(
        request.POST.get("message") if request.method == "POST" else request.GET.get("message")
    )
    if request.method == "POST":
        form = CuratedAnswerForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                curated_answer_create(
                    business=business,
                    question=data["question"],
                    answer=data["answer"],
                    paraphrases=data["paraphrases"],
                    is_active=data["is_active"],
                    created_by=request.user,
                    source_message_id=source,
                )
            except CuratedAnswerInvalid as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, "Saved. The agent answers this question with it from now on.")
                return redirect("dashboard:curated_answers", slug=business.slug)
        return _form_page(request, form, source=source, status=400)

    initial = {
        "question": (request.GET.get("question") or "")[:500],
        "answer": (request.GET.get("answer") or "")[:4000],
        "is_active": True,
    }
    if source is not None:
        found = selectors.reply_and_question(business, source)
        if found is None:
            # Another business's message, or not an agent reply: the form opens empty, naming nothing.
            source = None
            messages.error(request, "That reply was not found; write the question and the answer here.")
        else:
            reply, question = found
            initial.update(question=question[:500], answer=reply.text[:4000])
    return _form_page(request, CuratedAnswerForm(initial=initial), source=source)


@member_view(curated_id="curated_answer")
@require_http_methods(["GET", "POST"])
def curated_answer_edit(request: BusinessRequest, curated_id: int) -> HttpResponse:
    business = request.business
    curated = curated_answer_of(business, curated_id)
    assert curated is not None  # member_view answered 404 for another business's
    if request.method == "POST":
        form = CuratedAnswerForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                curated_answer_update(
                    curated=curated,
                    question=data["question"],
                    answer=data["answer"],
                    paraphrases=data["paraphrases"],
                    is_active=data["is_active"],
                )
            except CuratedAnswerInvalid as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, "Saved.")
                return redirect("dashboard:curated_answers", slug=business.slug)
        return _form_page(request, form, curated=curated, status=400)
    form = CuratedAnswerForm(
        initial={
            "question": curated.question,
            "paraphrases": "\n".join(curated.paraphrases),
            "answer": curated.answer,
            "is_active": curated.is_active,
        }
    )
    return _form_page(request, form, curated=curated)


@member_view(curated_id="curated_answer")
@require_POST
def curated_answer_delete_view(request: BusinessRequest, curated_id: int) -> HttpResponse:
    business = request.business
    curated = curated_answer_of(business, curated_id)
    assert curated is not None
    curated_answer_delete(curated=curated)
    messages.success(request, "Deleted. The agent no longer uses that answer.")
    return redirect("dashboard:curated_answers", slug=business.slug)


@member_view()
@require_POST
def curated_answers_import_view(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = CuratedImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _list_page(request, import_form=form, status=400)
    try:
        result = curated_answers_import(
            business=business, data=form.cleaned_data["file"].read(), created_by=request.user
        )
    except CuratedAnswerInvalid as exc:
        form.add_error("file", str(exc))
        return _list_page(request, import_form=form, status=400)
    messages.success(request, f"Imported: {result.created} new, {result.updated} updated.")
    for error in result.errors[:IMPORT_ERRORS_SHOWN]:
        messages.error(request, f"Line {error['row']}: {error['reason']}")
    if len(result.errors) > IMPORT_ERRORS_SHOWN:
        messages.error(request, f"… and {len(result.errors) - IMPORT_ERRORS_SHOWN} more lines not imported.")
    return redirect("dashboard:curated_answers", slug=business.slug)


@member_view()
@require_GET
def curated_answers_export(request: BusinessRequest) -> HttpResponse:
    business = request.business
    response = HttpResponse(curated_answers_csv(business), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="curated-answers-{business.slug}.csv"'
    return response
