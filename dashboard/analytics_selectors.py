"""The analytics page's reads: is the agent answering, how fast, how often it needs a human, and what
people ask about. Every function takes the business first and reads only its rows."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db import connection
from django.db.models import Avg, Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from businesses.models import Business
from catalogs.models import Item
from dashboard.selectors import citation_item_ids, grounding_flags
from messaging.models import Conversation, Message

# The key of Message.timings that holds the time to first token, in milliseconds (set by the reply task).
TTFT_KEY = "first_token"


@dataclass(frozen=True)
class Analytics:
    days: list[date]
    conversations_per_day: list[int]
    messages_per_day: list[int]
    conversations: int
    # The resolution rate: the share of conversations that went without a handoff (no handoff by the agent,
    # no takeover or reply by staff).
    answered_without_human: float | None
    handoffs: int
    handoff_reasons: list[tuple[str, int]]
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    replies_measured: int
    grounding_flagged: int
    grounding_flags: list[tuple[str, int]]
    unanswered: list[tuple[str, datetime]]  # customer questions whose reply cited no item
    top_products: list[tuple[Item, int]]
    thumbs_up: int  # the customers' ratings of the period's agent replies (the widget's thumbs)
    thumbs_down: int
    csat_average: float | None  # "How did we do?" when a conversation closed: the mean score, 1 to 5
    csat_answers: int

    @property
    def thumbs_up_share(self) -> float | None:
        rated = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / rated if rated else None


def analytics(business: Business, *, days: int = 30, now: datetime | None = None) -> Analytics:
    """The analytics page's figures over the last ``days`` days (in the business's time zone)."""
    tz = zoneinfo.ZoneInfo(business.timezone)
    now = now or timezone.now()
    first_day = now.astimezone(tz).date() - timedelta(days=days - 1)
    since = datetime.combine(first_day, time.min, tzinfo=tz)
    day_list = [first_day + timedelta(days=i) for i in range(days)]

    # The playground's conversations are the owner trying a draft, not customers.
    conversations = Conversation.objects.filter(business=business, created_at__gte=since, preview=False)
    msgs = Message.objects.filter(business=business, created_at__gte=since, conversation__preview=False)
    conv_days = dict(
        conversations.annotate(day=TruncDate("created_at", tzinfo=tz))
        .values_list("day")
        .annotate(n=Count("pk"))
    )
    msg_days = dict(
        msgs.annotate(day=TruncDate("created_at", tzinfo=tz)).values_list("day").annotate(n=Count("pk"))
    )

    # Conversations in which a customer spoke: answered alone = no handoff and no staff message.
    spoken = conversations.filter(messages__role=Message.Role.CUSTOMER).distinct()
    total = spoken.count()
    helped = spoken.filter(
        Q(state=Conversation.State.HUMAN)
        | Q(messages__role=Message.Role.STAFF)
        | Q(messages__role=Message.Role.AGENT, messages__grounding__has_key="handoff")
    ).distinct()
    alone = total - helped.count()
    # Handoffs decided by the agent are recorded on its reply (grounding["handoff"]) and survive a hand
    # back; a takeover by staff only lives on the conversation while it is in "human" state.
    reason_counts: dict[str, int] = {}
    agent_handoff_conversations: set[int] = set()
    for conversation_id, reason in msgs.filter(
        role=Message.Role.AGENT, grounding__has_key="handoff"
    ).values_list("conversation_id", "grounding__handoff"):
        reason_counts[str(reason) or "handoff"] = reason_counts.get(str(reason) or "handoff", 0) + 1
        agent_handoff_conversations.add(conversation_id)
    for reason in (
        conversations.filter(state=Conversation.State.HUMAN)
        .exclude(pk__in=agent_handoff_conversations)
        .values_list("handoff_reason", flat=True)
    ):
        reason_counts[reason or "staff took over"] = reason_counts.get(reason or "staff took over", 0) + 1
    reasons = sorted(reason_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]

    agent_msgs = msgs.filter(role=Message.Role.AGENT)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v), percentile_cont(0.95) WITHIN GROUP (ORDER BY v),"
            " count(v) FROM (SELECT (timings->>%s)::float AS v FROM messaging_message"
            " WHERE business_id = %s AND role = 'agent' AND created_at >= %s"
            " AND jsonb_typeof(timings->%s) = 'number') t",
            [TTFT_KEY, business.pk, since, TTFT_KEY],
        )
        p50, p95, measured = cursor.fetchone()

    flag_counts: dict[str, int] = {}
    flagged = 0
    for grounding in agent_msgs.exclude(grounding={}).values_list("grounding", flat=True):
        flags = grounding_flags(grounding)
        if flags:
            flagged += 1
        for flag in flags:
            kind = flag.split(":", 1)[0]
            flag_counts[kind] = flag_counts.get(kind, 0) + 1

    unanswered = list(
        msgs.filter(role=Message.Role.CUSTOMER, reply__citations=[], reply__role=Message.Role.AGENT)
        .exclude(reply__grounding__has_key="handoff")
        .order_by("-created_at")
        .values_list("text", "created_at")[:20]
    )

    ratings = dict(agent_msgs.exclude(rating="").values_list("rating").annotate(n=Count("pk")).order_by())

    csat = conversations.filter(csat_score__isnull=False).aggregate(mean=Avg("csat_score"), n=Count("pk"))

    cited: dict[int, int] = {}
    for citations in agent_msgs.exclude(citations=[]).values_list("citations", flat=True):
        for item_id in citation_item_ids(citations):
            cited[item_id] = cited.get(item_id, 0) + 1
    top_ids = sorted(cited, key=lambda i: (-cited[i], i))[:10]
    items = {i.pk: i for i in Item.objects.filter(business=business, pk__in=top_ids).defer("embedding")}

    return Analytics(
        days=day_list,
        conversations_per_day=[conv_days.get(d, 0) for d in day_list],
        messages_per_day=[msg_days.get(d, 0) for d in day_list],
        conversations=total,
        answered_without_human=(alone / total) if total else None,
        handoffs=sum(reason_counts.values()),
        handoff_reasons=reasons,
        ttft_p50_ms=round(p50, 1) if p50 is not None else None,
        ttft_p95_ms=round(p95, 1) if p95 is not None else None,
        replies_measured=measured,
        grounding_flagged=flagged,
        grounding_flags=sorted(flag_counts.items(), key=lambda kv: (-kv[1], kv[0])),
        unanswered=unanswered,
        top_products=[(items[i], cited[i]) for i in top_ids if i in items],
        thumbs_up=ratings.get(Message.Rating.UP, 0),
        thumbs_down=ratings.get(Message.Rating.DOWN, 0),
        csat_average=round(float(csat["mean"]), 2) if csat["mean"] is not None else None,
        csat_answers=csat["n"],
    )
