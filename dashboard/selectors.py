"""Reads for the admin pages (the analytics page's are in ``dashboard.analytics_selectors``). Every function
takes the business first and reads only its rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, OuterRef, Q, Subquery
from django.urls import reverse

from agents.models import Agent
from businesses.models import ApiKey, Business
from businesses.selectors import get_scoped_or_404
from businesses.services import normalize_origin
from catalogs.import_selectors import import_live_progress
from catalogs.models import FeedSource, Import, ImportCountsJson, Item
from messaging.models import ChannelAccount, Conversation, Message, MessageMedia


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    help: str
    done: bool
    url: str


def onboarding_steps(business: Business, *, own_origins: Iterable[str] = ()) -> list[Step]:
    """The checklist on the overview page. Each step ticks itself from real data, never from a click.

    ``own_origins``: this service's addresses (the admin's playground may be allowed there); allowing them
    does not mean the widget is installed on the business's site.
    """
    slug = business.slug
    own = {normalize_origin(o) for o in own_origins}
    site_origins = [o for o in business.allowed_origins if normalize_origin(o) not in own]
    return [
        Step(
            "catalog",
            "Upload your catalog",
            "A product feed or spreadsheet (CSV, XLSX, JSON) and your FAQs.",
            _has_catalog(business),
            reverse("dashboard:catalog", kwargs={"slug": slug}),
        ),
        Step(
            "agent",
            "Configure your agent",
            "Give it a name, a greeting and instructions.",
            _agent_configured(business),
            reverse("dashboard:agent", kwargs={"slug": slug}),
        ),
        Step(
            "try",
            "Try it in the playground",
            "Ask a question the way a customer would.",
            Message.objects.filter(business=business, role=Message.Role.AGENT).exists(),
            reverse("dashboard:agent", kwargs={"slug": slug}),
        ),
        Step(
            "install",
            "Install the widget on your site",
            "Copy one line into your pages and allow your site's address.",
            bool(site_origins),
            reverse("dashboard:install", kwargs={"slug": slug}),
        ),
        Step(
            "whatsapp",
            "Connect WhatsApp",
            "Answer customers where they already write to you.",
            _whatsapp_connected(business),
            reverse("dashboard:channels", kwargs={"slug": slug}),
        ),
    ]


def _has_catalog(business: Business) -> bool:
    return Item.objects.filter(business=business).exists()


def _agent_configured(business: Business) -> bool:
    # The settings row is created with defaults on first read (the widget's config does that), so its
    # existence says nothing; written instructions or business facts do, published or in the draft.
    return (
        Agent.objects.filter(business=business)
        .filter(
            ~Q(instructions="")
            | ~Q(business_facts="")
            | Q(draft__has_key="instructions")
            | Q(draft__has_key="business_facts")
        )
        .exists()
    )


def _whatsapp_connected(business: Business) -> bool:
    return ChannelAccount.objects.filter(
        business=business, kind=ChannelAccount.Kind.WHATSAPP, active=True
    ).exists()


@dataclass(frozen=True)
class OverviewStats:
    conversations: int
    needs_human: int
    messages: int


def overview_stats(business: Business) -> OverviewStats:
    conversations = Conversation.objects.filter(business=business)
    return OverviewStats(
        conversations=conversations.count(),
        needs_human=conversations.filter(state=Conversation.State.HUMAN).count(),
        messages=Message.objects.filter(business=business).count(),
    )


def api_key_or_404(business: Business, api_key_id: int) -> ApiKey:
    return get_scoped_or_404(business, ApiKey.objects.all(), pk=api_key_id)


# --- Catalog ------------------------------------------------------------------------------------------------


def imports_recent(business: Business, limit: int = 20) -> list[Import]:
    return list(Import.objects.filter(business=business).order_by("-created_at")[:limit])


def import_or_404(business: Business, import_id: int) -> Import:
    return get_scoped_or_404(business, Import.objects.select_related("business"), pk=import_id)


def item_or_404(business: Business, item_id: int) -> Item:
    return get_scoped_or_404(business, Item.objects.all(), pk=item_id)


@dataclass(frozen=True)
class FeedRow:
    feed: FeedSource
    last_import: Import | None  # the last run that fetched something (or failed to)
    held: Import | None  # a run waiting for the owner's decision


def feeds_overview(business: Business) -> list[FeedRow]:
    """The business's feeds with each one's last import and held run (three queries, whatever the count)."""
    feeds = list(FeedSource.objects.filter(business=business).order_by("created_at", "pk"))
    latest = {
        imp.feed_id: imp
        for imp in Import.objects.filter(business=business, feed__in=feeds)
        .order_by("feed_id", "-created_at", "-pk")
        .distinct("feed_id")
    }
    held = {
        imp.feed_id: imp
        for imp in Import.objects.filter(business=business, feed__in=feeds, state=Import.State.HELD)
    }
    return [FeedRow(feed, latest.get(feed.pk), held.get(feed.pk)) for feed in feeds]


def feed_or_404(business: Business, feed_id: int) -> FeedSource:
    return get_scoped_or_404(business, FeedSource.objects.all(), pk=feed_id)


def feed_held_import(business: Business, feed: FeedSource) -> Import | None:
    """The feed's run waiting for the owner's decision, if any (a newer fetch discards an older one)."""
    return Import.objects.filter(business=business, feed=feed, state=Import.State.HELD).first()


def feed_runs(business: Business, *, feed: FeedSource | None = None, limit: int = 20) -> list[Import]:
    """The last imports that feeds started (of one feed, or of all), newest first."""
    runs = Import.objects.filter(business=business, feed__isnull=False).select_related("feed")
    if feed is not None:
        runs = runs.filter(feed=feed)
    return list(runs.order_by("-created_at", "-pk")[:limit])


@dataclass(frozen=True)
class CatalogCounts:
    items: int
    in_stock: int
    retired: int
    documents: int


def catalog_counts(business: Business) -> CatalogCounts:
    from catalogs.models import Document

    counts = Item.objects.filter(business=business).aggregate(
        items=Count("pk", filter=Q(is_active=True)),
        in_stock=Count("pk", filter=Q(is_active=True, availability="in_stock")),
        retired=Count("pk", filter=Q(is_active=False)),
    )
    return CatalogCounts(
        documents=Document.objects.filter(business=business, is_active=True).count(), **counts
    )


def item_categories(business: Business, limit: int = 200) -> list[str]:
    return list(
        Item.objects.filter(business=business, is_active=True)
        .exclude(category="")
        .order_by("category")
        .values_list("category", flat=True)
        .distinct()[:limit]
    )


class ImportBar(ImportCountsJson):
    """An import as its progress bar shows it (``import_status``; the progress socket's ``import.status``)."""

    id: int
    filename: str
    state: str
    phase: str
    phase_label: str
    rows_done: int
    rows_total: int
    percent: int
    rate: float | None  # rows per second
    eta_seconds: float | None
    error_message: str
    finished: bool
    errors_url: str | None  # the report, once it ended with one


def import_status(imp: Import) -> ImportBar:
    """What the progress bar shows: rows done, phase, rate and time left (JSON-serialisable).

    While the import's write transaction is open its row still reads 0 rows done; the live figures are the
    last progress event, kept in Redis by the import (``catalogs.import_selectors.import_live_progress``).
    """
    phase, rows_done, rows_total = imp.phase, imp.rows_done, imp.rows_total
    rate: float | None = None
    eta: float | None = None
    live = import_live_progress(imp)
    if live:
        phase, rows_done, rows_total = live["phase"], live["rows_done"], live["rows_total"]
        rate, eta = live.get("rate"), live.get("eta")
    elif imp.started_at and imp.finished_at and rows_done:
        rate = round(rows_done / max((imp.finished_at - imp.started_at).total_seconds(), 0.001), 1)
    if imp.is_finished:
        percent, eta = 100, 0.0
    else:
        percent = min(int(rows_done * 100 / rows_total), 99) if rows_total else 0
    return {
        "id": imp.pk,
        "filename": imp.original_filename,
        "state": imp.state,
        "phase": phase,
        "phase_label": Import.Phase(phase).label if phase in Import.Phase.values else phase,
        "rows_done": rows_done,
        "rows_total": rows_total,
        "percent": percent,
        "rate": rate,
        "eta_seconds": eta,
        **imp.counts(),
        "error_message": imp.error_message,
        "finished": imp.is_finished,
        "errors_url": reverse(
            "dashboard:catalog_import_errors", kwargs={"slug": imp.business.slug, "import_id": imp.pk}
        )
        # error_report also holds lines for rows that imported with a change (a dropped link).
        if imp.is_finished and (imp.failed_count or imp.error_message or imp.error_report)
        else None,
    }


# --- Inbox --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationRow:
    conversation: Conversation
    last_text: str
    last_role: str
    last_at: datetime | None
    needs_human: bool


def conversations_list(
    business: Business, *, channel: str = "", state: str = "", needs_human: bool = False, limit: int = 100
) -> list[ConversationRow]:
    """The inbox list, most recently active first, with each conversation's last message (one query)."""
    last = Message.objects.filter(conversation=OuterRef("pk")).order_by("-created_at", "-pk")
    conversations = (
        Conversation.objects.filter(business=business)
        .select_related("contact")
        .annotate(
            last_text=Subquery(last.values("text")[:1]),
            last_role=Subquery(last.values("role")[:1]),
            last_at=Subquery(last.values("created_at")[:1]),
        )
    )
    if channel:
        conversations = conversations.filter(channel=channel)
    if state:
        conversations = conversations.filter(state=state)
    if needs_human:
        # Staff has the conversation and the customer spoke last: somebody should answer.
        conversations = conversations.filter(state=Conversation.State.HUMAN, last_role=Message.Role.CUSTOMER)
    rows = []
    for conv in conversations.order_by("-updated_at", "-pk")[:limit]:
        rows.append(
            ConversationRow(
                conversation=conv,
                last_text=conv.last_text or "",
                last_role=conv.last_role or "",
                last_at=conv.last_at,
                needs_human=conv.state == Conversation.State.HUMAN
                and conv.last_role == Message.Role.CUSTOMER,
            )
        )
    return rows


def conversation_or_404(business: Business, conversation_id: int) -> Conversation:
    return get_scoped_or_404(business, Conversation.objects.select_related("contact"), pk=conversation_id)


@dataclass(frozen=True)
class ThreadMessage:
    message: Message
    cited_items: list[Item]
    grounding_flags: list[str]
    media: list[MessageMedia]  # a customer's photo or voice note


def conversation_thread(
    business: Business, conversation: Conversation, *, after_id: int = 0
) -> list[ThreadMessage]:
    """The conversation's messages (after ``after_id``), each with the catalog items it cited."""
    messages = list(
        Message.objects.filter(business=business, conversation=conversation, pk__gt=after_id)
        .order_by("created_at", "pk")
        .prefetch_related("media")
    )
    item_ids = {i for m in messages for i in citation_item_ids(m.citations)}
    items = {i.pk: i for i in Item.objects.filter(business=business, pk__in=item_ids).defer("embedding")}
    return [
        ThreadMessage(
            message=m,
            cited_items=[items[i] for i in citation_item_ids(m.citations) if i in items],
            grounding_flags=grounding_flags(m.grounding),
            media=list(m.media.all()),
        )
        for m in messages
    ]


def citation_item_ids(citations: object) -> list[int]:
    """Item ids from a message's ``citations`` (a list of ids, or of objects with an ``item_id``/``id``)."""
    ids: list[int] = []
    if not isinstance(citations, list):
        return ids
    for c in citations:
        raw = c.get("item_id", c.get("id")) if isinstance(c, dict) else c
        if isinstance(raw, int) and not isinstance(raw, bool) and raw not in ids:
            ids.append(raw)
        elif isinstance(raw, str) and raw.isdigit() and int(raw) not in ids:
            ids.append(int(raw))
    return ids


ISSUE_LABELS = {
    "wrong_price": "wrong price",
    "unknown_price": "price not in catalog",
    "wrong_stock": "wrong stock",
}


def grounding_flags(grounding: object) -> list[str]:
    """Readable grounding problems of an agent reply (``agents.grounding.GroundingResult.as_json``)."""
    if not isinstance(grounding, dict):
        return []
    issues = grounding.get("issues")
    out = []
    for issue in issues if isinstance(issues, list) else []:
        if not isinstance(issue, dict):
            continue
        kind = ISSUE_LABELS.get(str(issue.get("kind")), str(issue.get("kind") or "flag"))
        detail = f'"{issue.get("text", "")}"'
        if issue.get("expected"):
            detail += f" (catalog: {issue['expected']})"
        out.append(f"{kind}: {detail}")
    return out


def reply_and_question(business: Business, message_id: int) -> tuple[Message, str] | None:
    """The business's agent reply ``message_id`` and the customer's message it answered (the last one
    before it in its conversation; "" when there is none), or None for anything else."""
    reply = Message.objects.filter(business=business, pk=message_id, role=Message.Role.AGENT).first()
    if reply is None:
        return None
    asked = (
        Message.objects.filter(
            business=business,
            conversation_id=reply.conversation_id,
            role=Message.Role.CUSTOMER,
            pk__lt=reply.pk,
        )
        .order_by("-pk")
        .values_list("text", flat=True)
        .first()
    )
    return reply, asked or ""
