"""``respond()``: one streamed answer to a customer's question, its facts rendered from the data.

It knows nothing of stored conversations: the caller (messaging.tasks.reply) passes the recent turns and
the question, and consumes the events::

    async with contextlib.aclosing(respond(business=b, agent=a, turns=t, question=q, affinity_key=k)) as ev:
        async for event in ev:
            Citations(items)         # once, first: the rows retrieved
            TextDelta(text)          # any number: only text that has passed its checks
            Usage(prompt_tokens, completion_tokens)
            Done(text, cards, grounding, ...)  # always last

How an answer is made (docs/agent.md, "How a fact reaches an answer"):

0. a curated answer (the business's own right answer, ``agents.models.CuratedAnswer``) whose question means
   the same as the customer's, found by retrieval with the same embedding, is the answer, verbatim: no
   model words, and its prices and stock claims are checked against the products it names (``_curated``);
1. retrieval (``agents.retrieval``), then ``agents.answers.plan``: which rows answer the question (items, an FAQ passage, the
   business facts), or nothing relevant (the agent's no-results message, without a model call);
2. the factual answer is rendered from those rows (``answers.render``) and streamed at once: prices,
   stock and policies never come from the model;
3. the model may add a sentence around it (a tip, a follow-up question; ``agents.model_words``). It streams
   into a buffer, and each complete sentence is shown only when ``agents.screen`` passes it; the rest is
   dropped and recorded.
   A model that fails, is busy past the pool's wait, or says nothing leaves the answer as it is;
4. the whole text goes through the grounding check once more (prices, stock, policy claims) as the last line.

So every text a customer sees, streamed, stopped or final, has been checked: a stopped reply keeps what was
shown. Closing the generator (``aclose()``) closes the upstream request at once (used for "stop").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from django.conf import settings
from django.utils import timezone

from agents import answers, grounding
from agents.cards import Card, cards_for
from agents.model_words import Dropped, ModelTimings, ModelWords, joined
from agents.models import Agent
from agents.policy_claims import policy_issues
from agents.prompts import DataEntry, Turn, assemble, forbidden_topic, is_open, private_text, retrieval_query
from agents.question import language_of, signals
from agents.retrieval import Found, Prefetch, retrieve
from agents.screen import Screen
from businesses.models import Business
from inference import types as inference
from inference.chat import complete_chat

REFUSAL = "Sorry, that is not something I can help with here."
INTERNALS_REFUSAL = (
    "I can't share how I'm set up, but I'm happy to help with our products, prices, stock and shop policies."
)


@dataclass(frozen=True)
class TextDelta:
    text: str


class CitationJson(TypedDict):
    """A retrieved row the reply rests on, as the events carry it and the reply stores it
    (``Message.citations``)."""

    kind: Literal["item", "chunk"]
    item_id: int | None
    chunk_id: int | None
    external_id: str
    title: str
    score: float


@dataclass(frozen=True)
class Citations:
    items: list[CitationJson]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class AnswerTimings(ModelTimings, total=False):
    """Where an answer's time went, in ms (``Done.timings``; the reply engine adds its own: messaging.replies.claim)."""

    retrieval: float
    translation: float  # a question asked again in English
    prompt: float
    first_token: float
    total: float


class AnswerChecks(TypedDict, total=False):
    """What the checks found (``Done.grounding``, stored on the reply): the grounding result's fields
    (``grounding.GroundingJson``) and what ``respond`` adds; a refusal and a no-results answer carry only
    ``refused`` / ``answer``."""

    mode: str
    ok: bool
    action: grounding.Action
    issues: list[grounding.IssueJson]
    prices_checked: int
    stock_checked: int
    products_mentioned: list[int]
    answer: answers.Kind
    language: str
    dropped: list[Dropped]  # the model's sentences held back, and why
    model_error: str
    refused: bool
    curated_answer: int  # the id of the curated answer that was the reply
    curated_similarity: float  # how close the customer's question came to its nearest phrasing


@dataclass(frozen=True)
class Done:
    text: str
    cards: list[Card]
    grounding: AnswerChecks
    raw_text: str  # what the model said, before screening ("" when it was not asked or failed)
    finish_reason: str = "stop"
    endpoint: str = ""
    no_results: bool = False
    timings: AnswerTimings = field(default_factory=AnswerTimings)


Event = TextDelta | Citations | Usage | Done


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


def _row(hit: Any) -> answers.Row:
    if hit.kind == "item":
        return answers.Row(
            kind="item",
            ref=f"item:{hit.item_id}",
            title=hit.title,
            text=hit.text,
            score=float(hit.score),
            item=_ground_item(hit),
            category=hit.category or "",
            lexical=float(hit.fulltext_score),
            vector=float(hit.vector_score),
        )
    return answers.Row(
        kind="chunk", ref=f"doc:{hit.chunk_id}", title=hit.title, text=hit.text, score=float(hit.score)
    )


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
    """Retrieve, compose from the data, let the model add what passes the checks (see the module docstring)."""
    started = time.perf_counter()
    timings: AnswerTimings = {}
    asked = signals(question)
    refusal = REFUSAL if forbidden_topic(agent, question) else INTERNALS_REFUSAL if asked.internals else ""
    if refusal:
        timings["total"] = _ms(started)
        yield Citations([])
        yield TextDelta(refusal)
        yield Done(text=refusal, cards=[], grounding={"refused": True}, raw_text="", timings=timings)
        return

    t = time.perf_counter()
    query = retrieval_query(question, turns)
    if prefetched is not None and prefetched.query == query:
        retrieved = await asyncio.shield(prefetched.hits)  # a retry of the reply awaits it again
    else:
        retrieved = await retrieve(business, query)
    hits = retrieved.hits
    timings["retrieval"] = _ms(t)
    yield Citations(
        [
            CitationJson(
                kind=h.kind,
                item_id=h.item_id,
                chunk_id=h.chunk_id,
                external_id=h.external_id,
                title=h.title,
                score=round(float(h.score), 4),
            )
            for h in hits
        ]
    )
    if retrieved.curated is not None:
        for curated_event in _curated(business, agent, retrieved, started=started, timings=timings):
            yield curated_event
        return
    plan = answers.plan(question, [_row(h) for h in hits], business_facts=agent.business_facts)
    if plan.no_results and plan.language != "en" and not asked.smalltalk:
        # Catalogs are mostly written in one language: a question in another that found nothing is asked
        # again in English ("Wie viel kostet eine Klingel?" -> "How much is a bell?"), if the model can.
        t = time.perf_counter()
        english = await _in_english(business.pk, question)
        if english:
            hits = (await retrieve(business, retrieval_query(english, turns))).hits
            plan = answers.plan(
                english, [_row(h) for h in hits], business_facts=agent.business_facts, language=plan.language
            )
        timings["translation"] = _ms(t)
    cited = [_ground_item(h) for h in hits if h.kind == "item" and h.item_id is not None]
    composed = answers.render(plan)
    if plan.no_results and not asked.smalltalk:
        # Nothing relevant to ground an answer on: the business's fallback, without spending a model call.
        timings["total"] = _ms(started)
        yield TextDelta(agent.no_results_message)
        yield Done(
            text=agent.no_results_message,
            cards=[],
            grounding={"answer": "none"},
            raw_text="",
            no_results=True,
            timings=timings,
        )
        return

    shown: list[str] = []
    if composed:
        timings["first_token"] = _ms(started)
        shown.append(composed)
        yield TextDelta(composed)

    out_of_hours = not is_open(agent, timezone_name=business.timezone, now=timezone.now())
    passages = [h.text for h in hits if h.kind == "chunk"] + [agent.business_facts]
    model = ModelWords()
    # Small talk is the model's alone (two sentences at least); an answer gets what the setting allows. With
    # none allowed, no prompt is built and no request made: the reply is the composed answer.
    limit = model_sentences() if composed else max(2, model_sentences())
    if limit:
        answer_hits = [h for h in hits if h.kind == "item" and h.item_id in plan_ids(plan)]
        context = Screen(
            items=list(plan.items),
            cited=cited,
            passages=passages,
            descriptions=[h.text for h in answer_hits],
            answer=composed,
            private=private_text(agent),
        )
        t = time.perf_counter()
        prompt = assemble(
            agent,
            business_name=business.name,
            entries=[_entry(h) for h in answer_hits],
            turns=turns,
            question=question,
            budget_tokens=max(256, settings.AGENT_PROMPT_TOKEN_BUDGET - agent.max_reply_tokens),
            out_of_hours=out_of_hours,
            answer=composed,
        )
        timings["prompt"] = _ms(t)
        request = inference.ChatRequest(
            business_id=business.pk,
            messages=prompt.messages,
            affinity_key=affinity_key,
            # A short request, closed once its sentences are in: a small server's single slot is held briefly.
            max_tokens=min(agent.max_reply_tokens, settings.AGENT_MODEL_TOKENS),
            temperature=agent.temperature,
            top_p=agent.top_p,
            model=agent.model or None,
        )
        async for event in model.stream(request, context, shown, limit=limit):
            if isinstance(event, str):
                timings.setdefault("first_token", _ms(started))
                yield TextDelta(event)
            else:
                yield Usage(event.prompt_tokens, event.completion_tokens)
        timings = {**timings, **model.timings}

    if not shown:
        # Small talk the model could not answer: the agent's greeting still answers a "hello".
        shown.append(agent.greeting)
        yield TextDelta(agent.greeting)
    text = joined(shown)
    # The quoted passage sentences are the shop's own words (their figures are FAQ figures, not prices of a
    # product): blanked, offsets kept, for the price and stock check.
    unquoted = text
    for quote in plan.quotes:
        unquoted = unquoted.replace(quote, " " * len(quote))
    result = grounding.check(unquoted, cited, mode=agent.grounding_mode)
    result.issues += policy_issues(text, passages)
    result.ok = not result.issues
    final, result = grounding.apply(text, result, withheld_message=agent.withheld_message)
    if out_of_hours and agent.out_of_hours_message.strip():
        final = f"{final}\n\n{agent.out_of_hours_message.strip()}"
    timings["total"] = _ms(started)
    found = result.as_json()
    checks: AnswerChecks = {
        "mode": found["mode"],
        "ok": found["ok"],
        "action": found["action"],
        "issues": found["issues"],
        "prices_checked": found["prices_checked"],
        "stock_checked": found["stock_checked"],
        "products_mentioned": found["products_mentioned"],
        "answer": plan.kind,
        "language": plan.language,
        "dropped": model.dropped,
    }
    if model.error:
        checks["model_error"] = model.error[:500]
    yield Done(
        text=final,
        cards=cards_for(result, cited),
        grounding=checks,
        raw_text="".join(model.raw).strip(),
        finish_reason=model.end.finish_reason if model.end else ("error" if model.error else "closed"),
        endpoint=model.end.endpoint if model.end else "",
        timings=timings,
    )


def _curated(
    business: Business, agent: Agent, found: Found, *, started: float, timings: AnswerTimings
) -> Iterator[Event]:
    """The reply that is a curated answer: its text verbatim, once the grounding check has passed the
    sentences that name a product (a price the catalog has changed since is a wrong price, handled by the
    agent's grounding mode like any other: corrected, withheld or flagged), with the out-of-hours note as on
    any reply. Checked before it is streamed, like every text a customer sees."""
    assert found.curated is not None
    text = found.curated.answer
    named: dict[int, grounding.GroundItem] = {}
    for hit in [*found.curated_rows, *found.hits]:
        if hit.kind == "item" and hit.item_id is not None:
            named.setdefault(int(hit.item_id), _ground_item(hit))
    cited = list(named.values())
    result = grounding.check_named(text, cited, mode=agent.grounding_mode)
    shown, result = grounding.apply(text, result, withheld_message=agent.withheld_message)
    timings["first_token"] = _ms(started)
    yield TextDelta(shown)
    final = shown
    if (
        not is_open(agent, timezone_name=business.timezone, now=timezone.now())
        and agent.out_of_hours_message.strip()
    ):
        final = f"{shown}\n\n{agent.out_of_hours_message.strip()}"
    timings["total"] = _ms(started)
    checked = result.as_json()
    checks: AnswerChecks = {
        "mode": checked["mode"],
        "ok": checked["ok"],
        "action": checked["action"],
        "issues": checked["issues"],
        "prices_checked": checked["prices_checked"],
        "stock_checked": checked["stock_checked"],
        "products_mentioned": checked["products_mentioned"],
        "curated_answer": found.curated.curated_id,
        "curated_similarity": found.curated.similarity,
    }
    yield Done(text=final, cards=cards_for(result, cited), grounding=checks, raw_text="", timings=timings)


def model_sentences() -> int:
    """How many checked sentences the model may add to an answer composed from the data.

    ``AGENT_MODEL_SENTENCES``, or by default none with the embedded SmolLM2-135M (its checked sentences are
    true but not worth reading: docs/benchmarks.md, "Answers") and two with a configured pool."""
    if settings.AGENT_MODEL_SENTENCES is not None:
        return settings.AGENT_MODEL_SENTENCES
    return 2 if settings.LLAMA_POOL else 0


TRANSLATE_PROMPT = "Translate the customer's message into English. Reply with the English translation only."


async def _in_english(business_id: int, question: str) -> str:
    """The question in English, from the model ("" when it cannot: a busy or failing pool, or an answer
    that is not an English sentence; a small model often cannot, and the question then stays unanswered)."""
    request = inference.ChatRequest(
        business_id=business_id,
        messages=[{"role": "system", "content": TRANSLATE_PROMPT}, {"role": "user", "content": question}],
        max_tokens=2 * len(question.split()) + 16,
        temperature=0.0,
        top_p=1.0,
    )
    try:
        result = await complete_chat(request)
    except inference.InferenceError:
        return ""
    english = result.text.strip().splitlines()[0].strip(" \"'") if result.text.strip() else ""
    if not english or english.lower() == question.lower() or language_of(english, "") != "en":
        return ""
    return english[:300]


def plan_ids(plan: answers.Plan) -> set[int]:
    return {item.item_id for item in plan.items}
