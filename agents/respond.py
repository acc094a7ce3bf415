"""``respond()``: one streamed, grounded answer to a customer's question.

It knows nothing of stored conversations: the caller (messaging.tasks.reply) passes the recent turns and
the question, and consumes the events::

    async with contextlib.aclosing(respond(business=b, agent=a, turns=t, question=q, affinity_key=k)) as ev:
        async for event in ev:
            TextDelta(text)          # any number, as the model streams
            Citations(items)         # once, before the first delta: the rows the prompt quoted
            Usage(prompt_tokens, completion_tokens)
            Done(text, cards, grounding, ...)  # last, or instead:
            Cut(reason, text) / Failed(reason)

``Done.text`` is the text to store and show: after grounding it may differ from the streamed deltas
(a corrected price, a withheld reply); clients replace the streamed text with it. Timings (ms) are in
``Done.timings`` / ``Cut.timings`` / ``Failed.timings``: retrieval, prompt, first_token, total.

Closing the generator (``aclose()``) closes the upstream request at once (used for "stop").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents import grounding
from agents.inference import types as inference
from agents.inference.client import stream_chat
from agents.models import Agent
from agents.prompts import DataEntry, Turn, assemble, forbidden_topic, is_open, retrieval_query
from businesses.models import Business
from catalogs.selectors import PreparedSearch, prepare_search, run_search
from config import aio

SEARCH_LIMIT = 6
REFUSAL = "Sorry, that is not something I can help with here."


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Citation:
    kind: str  # "item" | "chunk"
    item_id: int | None
    chunk_id: int | None
    external_id: str
    title: str
    score: float


@dataclass(frozen=True)
class Citations:
    items: list[Citation]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Done:
    text: str
    cards: list[dict[str, Any]]
    grounding: dict[str, Any]
    raw_text: str  # what the model said, before grounding
    finish_reason: str = "stop"
    endpoint: str = ""
    no_results: bool = False
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Cut:
    reason: str
    text: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    reason: str
    timings: dict[str, float] = field(default_factory=dict)


Event = TextDelta | Citations | Usage | Done | Cut | Failed


def _ground_item(hit: Any) -> grounding.GroundItem:
    return grounding.GroundItem(
        item_id=int(hit.item_id),
        external_id=hit.external_id,
        title=hit.title,
        price=hit.price,
        sale_price=hit.sale_price,
        currency=hit.currency or "",
        availability=hit.availability or "",
        url=hit.url or "",
        image_url=hit.image_url or "",
    )


def _entry(hit: Any) -> DataEntry:
    if hit.kind == "item":
        fields: dict[str, Any] = {
            "sku": hit.external_id,
            "title": hit.title,
            "price": f"{hit.price} {hit.currency}".strip() if hit.price is not None else "",
            "sale_price": f"{hit.sale_price} {hit.currency}".strip() if hit.sale_price is not None else "",
            "availability": (hit.availability or "").replace("_", " "),
            "brand": hit.brand,
            "category": hit.category,
            "description": hit.text,
        }
        return DataEntry(ref=f"item:{hit.item_id}", fields=fields)
    return DataEntry(ref=f"doc:{hit.chunk_id}", fields={"title": hit.title, "text": hit.text})


def _prepare_search(business: Business | int, query: str) -> PreparedSearch | None:
    if isinstance(business, int):
        # The search reads only the business's id: no query to load the row (a prefetch knows just the id).
        business = Business(pk=business)
    return prepare_search(business, query, limit=SEARCH_LIMIT)


HandedVector = Callable[[], Awaitable[list[float] | None]]


async def retrieve(
    business: Business | int, query: str, handed_vector: HandedVector | None = None
) -> list[Any]:
    """The business's catalog rows (items and document chunks) for ``query``, best first.

    The search's word statistics are read while the query's embedding is on its way (they do not need it):
    the vector's wait and the statistics' round trips overlap. ``handed_vector``: the query's vector from
    an embedding started earlier (None when none came: the query is embedded here)."""
    vector = asyncio.ensure_future(_query_vector(query.strip(), handed_vector))
    # Not awaited when the statistics fail or nothing can match: its outcome then is nobody's business.
    vector.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        prepared = await aio.database(_prepare_search, business, query)
        if prepared is None:
            return []
        return await aio.database(run_search, prepared, await vector)
    finally:
        if not vector.done():
            vector.cancel()


@dataclass(frozen=True)
class Prefetch:
    """A retrieval started before the conversation was read (from the customer's message alone), so that it
    runs while the reply is claimed; ``respond`` uses it when the query turns out the same."""

    query: str
    hits: asyncio.Task[list[Any]]

    @classmethod
    def start(cls, business_id: int, question: str, handed_vector: HandedVector | None = None) -> Prefetch:
        query = prefetch_query(question)
        task = asyncio.create_task(retrieve(business_id, query, handed_vector))
        # Unused (a refusal, a follow-up read with the turns, a burst): its outcome is nobody's business.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return cls(query, task)

    def cancel(self) -> None:
        self.hits.cancel()


def prefetch_query(question: str) -> str:
    """The retrieval query of a question read without its conversation (a prefetch's)."""
    return retrieval_query(question, [])


async def _query_vector(query: str, handed_vector: HandedVector | None = None) -> list[float] | None:
    if settings.EMBEDDINGS_BACKEND != "pool":
        return None  # the local model runs inside run_search(), in the database thread
    if handed_vector is not None:
        vector = await handed_vector()
        if vector is not None:
            return vector
    return await embed_query(query)


async def embed_query(query: str) -> list[float]:
    """With pool embeddings, the query's vector from this event loop (the sync path would hop to the
    pool client's own loop thread from inside this one's sync_to_async, and block this reply on it)."""
    from agents.inference.client import embed

    [vector] = await embed([query.strip()[:1000]], model=settings.EMBEDDINGS_MODEL or None)
    return vector


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


async def respond(
    *,
    business: Business,
    agent: Agent,
    turns: list[Turn],
    question: str,
    affinity_key: str | None,
    prefetched: Prefetch | None = None,
) -> AsyncGenerator[Event, None]:
    """Retrieve, assemble, stream, ground (see the module docstring for the events)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if forbidden_topic(agent, question):
        timings["total"] = _ms(started)
        yield Citations([])
        yield TextDelta(REFUSAL)
        yield Done(text=REFUSAL, cards=[], grounding={}, raw_text=REFUSAL, timings=timings)
        return

    t = time.perf_counter()
    query = retrieval_query(question, turns)
    if prefetched is not None and prefetched.query == query:
        hits = await asyncio.shield(prefetched.hits)  # a retry of the reply awaits it again
    else:
        hits = await retrieve(business, query)
    timings["retrieval"] = _ms(t)
    yield Citations(
        [
            Citation(h.kind, h.item_id, h.chunk_id, h.external_id, h.title, round(float(h.score), 4))
            for h in hits
        ]
    )
    items = [_ground_item(h) for h in hits if h.kind == "item" and h.item_id is not None]
    out_of_hours = not is_open(agent, timezone_name=business.timezone, now=timezone.now())

    if not hits and not agent.business_facts.strip():
        # Nothing to ground an answer on: the business's fallback, without spending a model call.
        timings["total"] = _ms(started)
        yield TextDelta(agent.no_results_message)
        yield Done(
            text=agent.no_results_message,
            cards=[],
            grounding={},
            raw_text=agent.no_results_message,
            no_results=True,
            timings=timings,
        )
        return

    t = time.perf_counter()
    prompt = assemble(
        agent,
        business_name=business.name,
        entries=[_entry(h) for h in hits],
        turns=turns,
        question=question,
        budget_tokens=max(256, settings.AGENT_PROMPT_TOKEN_BUDGET - agent.max_reply_tokens),
        out_of_hours=out_of_hours,
    )
    timings["prompt"] = _ms(t)
    request = inference.ChatRequest(
        business_id=business.pk,
        messages=prompt.messages,
        affinity_key=affinity_key,
        max_tokens=agent.max_reply_tokens,
        temperature=agent.temperature,
        top_p=agent.top_p,
        model=agent.model or None,
    )
    parts: list[str] = []
    end: inference.StreamEnd | None = None
    pool_started = time.perf_counter()
    try:
        async with contextlib.aclosing(stream_chat(request)) as stream:
            async for event in stream:
                if isinstance(event, inference.TextDelta):
                    if not parts:
                        timings["first_token"] = _ms(started)
                        timings["pool_first_token"] = _ms(pool_started)
                    parts.append(event.text)
                    yield TextDelta(event.text)
                elif isinstance(event, inference.Usage):
                    yield Usage(event.prompt_tokens, event.completion_tokens)
                elif isinstance(event, inference.StreamEnd):
                    end = event
    except inference.StreamCut as exc:
        timings["total"] = _ms(started)
        yield Cut(reason=exc.reason, text="".join(parts), timings=timings)
        return
    except inference.InferenceError as exc:
        timings["total"] = _ms(started)
        if parts:
            yield Cut(reason=str(exc), text="".join(parts), timings=timings)
        else:
            yield Failed(reason=f"{type(exc).__name__}: {exc}", timings=timings)
        return

    raw = "".join(parts).strip()
    result = grounding.check(raw, items, mode=agent.grounding_mode)
    text, result = grounding.apply(raw, result, withheld_message=agent.withheld_message)
    if out_of_hours and agent.out_of_hours_message.strip():
        text = f"{text}\n\n{agent.out_of_hours_message.strip()}"
    timings["total"] = _ms(started)
    yield Done(
        text=text,
        cards=grounding.cards_for(result, items),
        grounding=result.as_json(),
        raw_text=raw,
        finish_reason=end.finish_reason if end else "unknown",
        endpoint=end.endpoint if end else "",
        timings=timings,
    )
