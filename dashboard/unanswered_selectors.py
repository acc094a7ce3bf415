"""The "Unanswered" page's reads: the customer questions the agent did not answer well, grouped by meaning.

A question is collected when its agent reply found nothing relevant (``grounding.no_results``), was withheld
or flagged by the grounding check (``grounding.action``; a corrected reply is not: the customer got the
catalog's figure), handed the conversation to a person (``grounding.handoff``), or got a thumbs-down from
the customer (``Message.rating``). The window is the last ``days`` days and at most ``MAX_QUESTIONS`` of the
newest such questions: the grouping embeds each one.

Grouping is greedy: newest first, a question joins the group whose centroid is nearest when the cosine
similarity is at least ``SIMILARITY`` (all-MiniLM-L6-v2 puts paraphrases at 0.75-0.85 and different
questions of a shop below 0.45), else it starts a group. Vectors come from the business's embedding backend
(``catalogs.embeddings``) and are kept in Redis per question for a week, so that only new questions are
embedded on the next visit. When the backend fails, questions are grouped by their normalised text instead,
and the result says so.
"""

from __future__ import annotations

import hashlib
import logging
import re
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, cast

import numpy as np
from django.db.models import Q
from django.utils import timezone

from businesses.models import Business
from catalogs.embeddings import get_backend
from common.redis import sync_client
from messaging.models import Message

logger = logging.getLogger(__name__)

MAX_QUESTIONS = 500
SIMILARITY = 0.7
EXAMPLES = 3
VECTOR_TTL_SECONDS = 7 * 86400

Reason = Literal["no_results", "withheld", "flagged", "handoff", "thumbs_down"]
REASON_LABELS: dict[Reason, str] = {
    "no_results": "nothing relevant found",
    "withheld": "reply withheld",
    "flagged": "reply flagged",
    "handoff": "handed to a person",
    "thumbs_down": "thumbs down",
}


@dataclass(frozen=True)
class UnansweredQuestion:
    message_id: int
    conversation_id: int
    text: str
    created_at: datetime
    reply_text: str
    reasons: tuple[Reason, ...]


@dataclass
class UnansweredGroup:
    """Questions that mean about the same; ``questions`` newest first (``examples`` are the first few)."""

    questions: list[UnansweredQuestion] = field(default_factory=list)
    reason_counts: dict[Reason, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.questions)

    @property
    def question(self) -> str:
        """The group's question as shown and pre-filled: its most frequent wording, the newest on a tie."""
        seen: dict[str, int] = {}
        for q in self.questions:
            seen[_normal(q.text)] = seen.get(_normal(q.text), 0) + 1
        best = max(seen.values())
        return next(q.text for q in self.questions if seen[_normal(q.text)] == best)

    @property
    def examples(self) -> list[UnansweredQuestion]:
        return self.questions[:EXAMPLES]

    @property
    def last_at(self) -> datetime:
        return self.questions[0].created_at

    @property
    def reasons(self) -> list[tuple[str, int]]:
        """(label, count) per reason, most frequent first."""
        ordered = sorted(self.reason_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(REASON_LABELS[reason], n) for reason, n in ordered]


@dataclass(frozen=True)
class Unanswered:
    groups: list[UnansweredGroup]
    questions: int  # collected in the window (at most MAX_QUESTIONS)
    capped: bool  # more matched than MAX_QUESTIONS: only the newest were grouped
    days: int
    by_meaning: bool  # False: the embedding backend failed, grouped by identical text


def _reasons(reply: Message) -> tuple[Reason, ...]:
    grounding = reply.grounding if isinstance(reply.grounding, dict) else {}
    found: list[Reason] = []
    if grounding.get("no_results") is True:
        found.append("no_results")
    if grounding.get("action") in ("withheld", "flagged"):
        found.append(grounding["action"])
    if "handoff" in grounding:
        found.append("handoff")
    if reply.rating == Message.Rating.DOWN:
        found.append("thumbs_down")
    return tuple(found)


def unanswered_questions(
    business: Business, *, days: int = 30, now: datetime | None = None, limit: int = MAX_QUESTIONS
) -> tuple[list[UnansweredQuestion], bool]:
    """The business's collected questions of the last ``days`` days, newest first, at most ``limit``; and
    whether there were more."""
    since = (now or timezone.now()) - timedelta(days=days)
    rows = list(
        Message.objects.filter(
            business=business,
            role=Message.Role.CUSTOMER,
            created_at__gte=since,
            reply__role=Message.Role.AGENT,
            reply__business=business,
            conversation__preview=False,  # the owner trying a draft in the playground
        )
        .filter(
            Q(reply__grounding__no_results=True)
            | Q(reply__grounding__action__in=["withheld", "flagged"])
            | Q(reply__grounding__has_key="handoff")
            | Q(reply__rating=Message.Rating.DOWN)
        )
        .exclude(text="")
        .select_related("reply")
        .order_by("-created_at", "-pk")[: limit + 1]
    )
    questions = [
        UnansweredQuestion(
            message_id=m.pk,
            conversation_id=m.conversation_id,
            text=m.text,
            created_at=m.created_at,
            reply_text=m.reply.text,
            reasons=_reasons(m.reply),
        )
        for m in rows[:limit]
    ]
    return questions, len(rows) > limit


def _normal(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.casefold()).strip()


def _vectors(business: Business, questions: list[UnansweredQuestion]) -> np.ndarray:
    """Unit vectors of the questions (in order): from Redis where kept, the rest embedded and kept."""
    backend = get_backend()
    # The text's digest too: a restored database that reuses ids never gets another question's vector.
    keys = [
        f"uq-vec:{business.pk}:{backend.name}:{q.message_id}:"
        + hashlib.sha256(q.text.encode()).hexdigest()[:16]
        for q in questions
    ]
    try:
        # The client does not decode replies: values are bytes.
        cached = cast(list[bytes | None], sync_client().mget(keys)) if keys else []
    except Exception:
        logger.warning("unanswered: question vectors not read from Redis", exc_info=True)
        cached = [None] * len(keys)
    vectors: list[list[float] | None] = []
    for raw in cached:
        if raw:
            values = array("f")
            values.frombytes(raw)
            vectors.append(values.tolist() if len(values) == backend.dimensions else None)
        else:
            vectors.append(None)
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        fresh = backend.embed([questions[i].text for i in missing])
        try:
            pipe = sync_client().pipeline(transaction=False)
            for i, vector in zip(missing, fresh, strict=True):
                pipe.set(keys[i], array("f", vector).tobytes(), ex=VECTOR_TTL_SECONDS)
            pipe.execute()
        except Exception:
            logger.warning("unanswered: question vectors not kept in Redis", exc_info=True)
        for i, vector in zip(missing, fresh, strict=True):
            vectors[i] = vector
    return np.array(vectors, dtype=np.float32).reshape(len(questions), backend.dimensions)


def group_questions(vectors: np.ndarray, *, threshold: float = SIMILARITY) -> list[list[int]]:
    """Greedy clustering of unit ``vectors`` (in the order given): each joins the nearest group centroid at
    a cosine similarity of at least ``threshold``, or starts a group. Returns the members' indexes."""
    groups: list[list[int]] = []
    sums: list[np.ndarray] = []
    for index, vector in enumerate(vectors):
        best, best_score = -1, threshold
        for g, total in enumerate(sums):
            norm = float(np.linalg.norm(total)) or 1.0
            score = float(np.dot(total, vector)) / norm
            if score >= best_score:
                best, best_score = g, score
        if best < 0:
            groups.append([index])
            sums.append(vector.astype(np.float64).copy())
        else:
            groups[best].append(index)
            sums[best] = sums[best] + vector
    return groups


def unanswered(
    business: Business, *, days: int = 30, now: datetime | None = None, limit: int = MAX_QUESTIONS
) -> Unanswered:
    """The page's groups, biggest first (then the most recent)."""
    questions, capped = unanswered_questions(business, days=days, now=now, limit=limit)
    by_meaning = True
    if questions:
        try:
            members = group_questions(_vectors(business, questions))
        except Exception:
            # Same wording still groups; the page says the grouping by meaning is unavailable.
            logger.warning("unanswered: embedding failed, grouping by text", exc_info=True)
            by_meaning = False
            by_text: dict[str, list[int]] = {}
            for i, q in enumerate(questions):
                by_text.setdefault(_normal(q.text), []).append(i)
            members = list(by_text.values())
    else:
        members = []
    groups = []
    for indexes in members:
        group = UnansweredGroup(questions=[questions[i] for i in indexes])
        for q in group.questions:
            for reason in q.reasons:
                group.reason_counts[reason] = group.reason_counts.get(reason, 0) + 1
        groups.append(group)
    groups.sort(key=lambda g: (-g.count, -g.last_at.timestamp()))
    return Unanswered(
        groups=groups, questions=len(questions), capped=capped, days=days, by_meaning=by_meaning
    )
