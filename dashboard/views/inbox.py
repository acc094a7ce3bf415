"""Inbox: conversations with live updates, the thread with citations and grounding, takeover and replies."""

from __future__ import annotations

from typing import TypedDict

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from dashboard import selectors
from dashboard.forms import InboxFilterForm, StaffReplyForm
from dashboard.permissions import BusinessRequest, member_view
from messaging.models import Conversation, MessageMedia
from messaging.services import (
    conversation_close,
    conversation_hand_back,
    conversation_handoff,
    staff_reply_send,
)
from regressions.models import ReplyMark
from regressions.services import reply_mark

# Recorded as the conversation's handoff reason (analytics groups handoffs by reason).
TAKEOVER_REASON = "staff took over from the inbox"


class _Filters(TypedDict):
    """The inbox filters, as keyword arguments of ``selectors.conversations_list``."""

    channel: str
    state: str
    needs_human: bool


def _filters(request: HttpRequest) -> tuple[InboxFilterForm, _Filters]:
    form = InboxFilterForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    return form, _Filters(
        channel=data.get("channel") or "",
        state=data.get("state") or "",
        needs_human=bool(data.get("needs_human")),
    )


def _inbox(
    request: BusinessRequest,
    conversation: Conversation | None,
    *,
    reply_form: StaffReplyForm | None = None,
    status: int = 200,
) -> HttpResponse:
    business = request.business
    form, filters = _filters(request)
    thread = selectors.conversation_thread(business, conversation) if conversation else []
    return render(
        request,
        "dashboard/inbox.html",
        {
            "filter_form": form,
            "rows": selectors.conversations_list(business, **filters),
            "current": conversation,
            "thread": thread,
            "last_id": thread[-1].message.pk if thread else 0,
            "reply_form": reply_form or StaffReplyForm(),
            "query": request.GET.urlencode(),
        },
        status=status,
    )


@member_view()
@require_GET
def inbox(request: BusinessRequest) -> HttpResponse:
    return _inbox(request, None)


@member_view()
@require_GET
def inbox_list(request: BusinessRequest) -> HttpResponse:
    """The conversation list alone, polled by the page every few seconds."""
    business = request.business
    _, filters = _filters(request)
    current = request.GET.get("current", "")
    return render(
        request,
        "dashboard/_conversation_list.html",
        {
            "rows": selectors.conversations_list(business, **filters),
            "current_id": int(current) if current.isdigit() else 0,
            "query": request.GET.urlencode(),
        },
    )


@member_view(conversation_id="conversation")
@require_GET
def inbox_conversation(request: BusinessRequest, conversation_id: int) -> HttpResponse:
    business = request.business
    return _inbox(request, selectors.conversation_or_404(business, conversation_id))


@member_view(conversation_id="conversation")
@require_GET
def inbox_messages(request: BusinessRequest, conversation_id: int) -> JsonResponse:
    """New messages after ``after`` (a message id) as rendered HTML, plus the state, for live updates.

    Messages still streaming are re-sent on every poll until they are done, so the page shows them growing.
    """
    business = request.business
    conversation = selectors.conversation_or_404(business, conversation_id)
    after = request.GET.get("after", "0")
    thread = selectors.conversation_thread(
        business, conversation, after_id=int(after) if after.isdigit() else 0
    )
    return JsonResponse(
        {
            "state": conversation.state,
            "state_label": conversation.get_state_display(),
            "messages": [
                {
                    "id": t.message.pk,
                    "final": t.message.status != t.message.Status.STREAMING,
                    "html": render_to_string("dashboard/_message.html", {"t": t}, request=request),
                }
                for t in thread
            ],
        }
    )


@member_view(conversation_id="conversation")
@require_POST
def inbox_takeover(request: BusinessRequest, conversation_id: int) -> HttpResponse:
    business = request.business
    conversation = selectors.conversation_or_404(business, conversation_id)
    conversation_handoff(business=business, conversation_id=conversation.pk, reason=TAKEOVER_REASON)
    messages.success(request, "You have the conversation. The agent stays silent until you hand it back.")
    return redirect("dashboard:inbox_conversation", slug=business.slug, conversation_id=conversation.pk)


@member_view(conversation_id="conversation")
@require_POST
def inbox_hand_back(request: BusinessRequest, conversation_id: int) -> HttpResponse:
    business = request.business
    conversation = selectors.conversation_or_404(business, conversation_id)
    conversation_hand_back(business=business, conversation_id=conversation.pk)
    messages.success(request, "Handed back: the agent answers again.")
    return redirect("dashboard:inbox_conversation", slug=business.slug, conversation_id=conversation.pk)


@member_view(conversation_id="conversation")
@require_POST
def inbox_close(request: BusinessRequest, conversation_id: int) -> HttpResponse:
    business = request.business
    conversation = selectors.conversation_or_404(business, conversation_id)
    conversation_close(business=business, conversation_id=conversation.pk)
    messages.success(
        request,
        "Closed. The customer was asked how we did."
        if conversation.channel == "widget"
        else "Closed. The customer's next message starts a new conversation.",
    )
    return redirect("dashboard:inbox_conversation", slug=business.slug, conversation_id=conversation.pk)


@member_view(conversation_id="conversation")
@require_POST
def inbox_reply(request: BusinessRequest, conversation_id: int) -> HttpResponse:
    business = request.business
    conversation = selectors.conversation_or_404(business, conversation_id)
    form = StaffReplyForm(request.POST)
    if not form.is_valid():
        return _inbox(request, conversation, reply_form=form, status=400)
    staff_reply_send(
        business=business, conversation_id=conversation.pk, user=request.user, text=form.cleaned_data["text"]
    )
    return redirect("dashboard:inbox_conversation", slug=business.slug, conversation_id=conversation.pk)


@member_view(message_id="message")
@require_POST
def inbox_mark(request: BusinessRequest, message_id: int) -> HttpResponse:
    """Mark an agent reply right or wrong: its question joins the regression suite, expecting a right
    reply's facts (as the catalog has them then) or anything but a wrong reply's words."""
    business = request.business
    found = selectors.reply_and_question(business, message_id)
    verdict = request.POST.get("verdict", "")
    if found is None or not found[1] or verdict not in ReplyMark.Verdict.values:
        messages.error(request, "Only a finished agent reply to a customer's question can be marked.")
        return redirect("dashboard:inbox", slug=business.slug)
    reply, question = found
    if reply.status == reply.Status.STREAMING or not reply.text.strip():
        messages.error(request, "Only a finished agent reply to a customer's question can be marked.")
    else:
        reply_mark(
            business=business,
            verdict=verdict,
            question=question,
            reply_text=reply.text,
            answer_kind=str(reply.grounding.get("answer") or ""),
            external_ids=[
                str(card.get("external_id") or "") for card in reply.cards if card.get("external_id")
            ],
            message_id=reply.pk,
            marked_by=request.user,
        )
        messages.success(
            request,
            "Marked right: the regression suite now checks that this question keeps its answer."
            if verdict == ReplyMark.Verdict.GOOD
            else "Marked wrong: the regression suite now checks that this answer does not come back. "
            "Write the right answer to fix it.",
        )
    return redirect("dashboard:inbox_conversation", slug=business.slug, conversation_id=reply.conversation_id)


@member_view(media_id="message_media")
@require_GET
def inbox_media(request: BusinessRequest, media_id: int) -> HttpResponse:
    """A customer's photo or voice note, for the business's members only (customers' files are never public);
    404 once purged (MESSAGE_MEDIA_RETENTION_DAYS) or when none was kept (refused)."""
    media = MessageMedia.objects.filter(business=request.business, pk=media_id).exclude(file="").first()
    if media is None:
        raise Http404
    try:
        with media.file.open("rb") as handle:
            data = handle.read()  # at most MESSAGE_AUDIO_MAX_BYTES
    except FileNotFoundError as exc:
        raise Http404 from exc
    # The type was read from the bytes when it came (messaging.media): only images and recordings are served.
    response = HttpResponse(data, content_type=media.content_type)
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "private, max-age=3600"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
