"""The reply sweeper: customer messages whose reply got lost on its way are queued again (policy, point 5).

The customer message is its reply's outbox: stored ``received`` with a ``reply_due_at``. Past it, a message
still ``received`` whose claim is free or stale had its publish lost, its task give up, or its worker die
mid-reply; ``replies_sweep`` queues its reply again. The claim protocol answers it once however often it is
queued. Each message is re-queued by its own id with its own conversation and business (as its first
task was): the sweeper reads nothing across tenants that it acts on together.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from common import metrics
from messaging.models import Message, conversation_group
from messaging.replies import policy
from messaging.replies.claim import claim_is_stale
from messaging.services import group_send, reply_enqueue

SWEEP_LIMIT = 500


def replies_sweep(*, now: dt.datetime | None = None) -> list[int]:
    """Queue again the replies of customer messages past their ``reply_due_at`` whose claim is free or
    stale, moving ``reply_due_at`` on by ``policy.REQUEUE_AFTER``; returns their ids. Two sweepers at once
    queue each message once: the conditional update that moves ``reply_due_at`` is the sweeper's claim."""
    now = now or timezone.now()
    candidates = (
        Message.objects.filter(
            role=Message.Role.CUSTOMER,
            status=Message.Status.RECEIVED,
            created_at__gte=now - policy.GIVE_UP_AFTER,
        )
        .filter(Q(reply_due_at__isnull=True) | Q(reply_due_at__lt=now))
        .order_by("pk")
        .values_list("pk", "claimed_at", "claimed_by")[:SWEEP_LIMIT]
    )
    # A live claim (a reply running, its lease renewed) is left alone; a dead process's or a run-out lease's
    # is due (claim_is_stale also knows a claim whose process on this host is gone: no wait for the lease).
    stale = [pk for pk, claimed_at, claimed_by in candidates if claim_is_stale(claimed_at, claimed_by, now)]
    if not stale:
        return []
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET reply_due_at = %s WHERE id = ANY(%s) AND status = %s "
            "AND (reply_due_at IS NULL OR reply_due_at < %s) "
            "RETURNING id, conversation_id, business_id, channel, text",
            [now + policy.REQUEUE_AFTER, stale, Message.Status.RECEIVED, now],
        )
        due = cursor.fetchall()
    for message_id, conversation_id, business_id, channel, text in sorted(due):
        message = Message(
            pk=message_id,
            conversation_id=conversation_id,
            business_id=business_id,
            channel=channel,
            text=text,
        )
        reply_enqueue(message=message)
    return sorted(row[0] for row in due)


ABANDONED = "no worker finished this reply in time"


def replies_abandon(*, now: dt.datetime | None = None) -> list[int]:
    """Finish ``failed`` the reply rows still ``streaming`` for a customer message the sweeper has given up
    on (received more than ``policy.GIVE_UP_AFTER`` ago, its claim not renewed for a lease), with the text
    they had; the message counts as answered by it, as after any failed reply. Their sockets get the reply's
    ``message.done``. Returns the reply ids."""
    now = now or timezone.now()
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH given_up AS (UPDATE {table} c SET status = %s WHERE c.role = %s AND c.status = %s "
            "AND c.created_at < %s AND (c.claimed_at IS NULL OR c.claimed_at < %s) "
            f"AND EXISTS (SELECT 1 FROM {table} r WHERE r.reply_to_id = c.id AND r.status = %s) RETURNING c.id) "
            f"UPDATE {table} r SET status = %s, error = %s, updated_at = %s FROM given_up "
            "WHERE r.reply_to_id = given_up.id AND r.status = %s RETURNING r.id, r.conversation_id, r.text",
            [
                Message.Status.ANSWERED,
                Message.Role.CUSTOMER,
                Message.Status.RECEIVED,
                now - policy.GIVE_UP_AFTER,
                now - dt.timedelta(seconds=settings.REPLY_LEASE_SECONDS),
                Message.Status.STREAMING,
                Message.Status.FAILED,
                ABANDONED,
                now,
                Message.Status.STREAMING,
            ],
        )
        finished = sorted(cursor.fetchall())
    metrics.REPLY_FAILURES.labels("abandoned").inc(len(finished))
    for reply_id, conversation_id, text in finished:
        group_send(
            conversation_group(conversation_id),
            {"type": "message.done", "message_id": reply_id, "text": text, "status": "failed", "cards": []},
        )
    return [row[0] for row in finished]
