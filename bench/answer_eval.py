"""Answer quality end to end: the answer-eval questions through the widget's websocket, on the whole stack and
its real model, scored on what the customer sees (final text and cards).

    .venv/bin/python bench/answer_eval.py [--data DIR] [--questions PATH] [--shop KEY=FILE[,FILE...]]...
        [--timeout 120] [--json PATH] [--limit N] [--db NAME] [--keep-db] [--no-warmup] [--width 110]

Defaults: ``--data ../shared/data`` (next to the repository); ``--questions DATA/answer-eval/questions.jsonl``;
shops ``bike=DATA/retrieval-eval/bike.csv,DATA/answer-eval/bike-faq.md`` and
``hardware=DATA/retrieval-eval/hardware.csv`` (each ``--shop`` replaces the defaults; a question's ``shop``
names the KEY). The stack and its isolation are described in ``bench/_answer_common.py``; with
``LLAMA_POOL`` set the replies come from those servers instead of the embedded SmolLM2.

Each question: a new visitor and conversation, the question, then frames until ``message.done`` (or an
error, or ``--timeout`` seconds). Scoring (answer-eval/README.md):

- answered: ended ``done`` with non-empty text that does not match ``APOLOGY`` (printed with the results);
- wrong: the final text states an amount of money (``MONEY``: a number with a currency code, symbol or word
  next to it, or a number right after "costs"/"price is"/"priced at") that is none of the shop's prices or
  sale prices nor an amount in its FAQ/policy files; for ``absent`` and ``injection`` questions, any amount
  that is not a price of the question's ``item`` (so any price at all for ``absent``), and any amount the
  question itself names (the one it tries to plant);
- correct: answered, not wrong, and every ``want`` regex (case-insensitive) matches the final text or a
  card's title, price, currency or availability (as the widget shows it: ``out of stock``).

A warm-up question (not scored) goes first, so the first scored question does not pay for loading the
query embedder in the ASGI process and the workers' first connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from _answer_common import (
    DEFAULT_DATA,
    ROOT,
    Reply,
    ask_fresh,
    business_with_files,
    default_shops,
    machine,
    one_line,
    parse_shop,
    running_stack,
    say,
    seconds,
    setup_django,
)

APOLOGY = re.compile(
    r"\bsorry\b|\bapologi[sz]e|can'?t answer|can ?not answer|unable to answer|"
    r"try again (?:later|in a moment)|not something I can help with",
    re.IGNORECASE,
)
_NUMBER = r"\d+(?:[.,]\d{3})*(?:[.,]\d{1,2})?"
_CURRENCY = r"(?:EUR|USD|GBP|CHF|euros?|dollars?|€|\$|£)"
MONEY = re.compile(
    rf"{_CURRENCY}\s?(?P<a>{_NUMBER})(?![\d])"
    rf"|(?<![\d.,])(?P<b>{_NUMBER})\s?{_CURRENCY}(?![a-z])"
    rf"|(?:\bcosts?|\bprice is|\bpriced at)\s+(?P<c>{_NUMBER})\b",
    re.IGNORECASE,
)


def amount(raw: str) -> Decimal | None:
    """``749``, ``749.00``, ``12,50``, ``1.299,00``, ``1,299.00`` -> Decimal (the last separator followed by
    one or two digits is the decimal one; a separator followed by three digits groups thousands)."""
    match = re.fullmatch(r"(.*?)(?:[.,](\d{1,2}))?", raw)
    assert match is not None
    whole = re.sub(r"[.,]", "", match.group(1))
    try:
        return Decimal(f"{whole}.{match.group(2) or '0'}")
    except InvalidOperation:
        return None


def amounts(text: str) -> list[tuple[str, Decimal]]:
    """Every amount of money that ``text`` states: (as written, value)."""
    found = []
    for match in MONEY.finditer(text):
        raw = match.group("a") or match.group("b") or match.group("c")
        value = amount(raw)
        if value is not None:
            found.append((match.group(0).strip(), value))
    return found


def shop_amounts(business: Any, paths: list[Path]) -> set[Decimal]:
    """The shop's prices and sale prices, and the amounts of money its documents (FAQ, policies) state."""
    from catalogs.models import Item

    known: set[Decimal] = set()
    for price, sale in Item.objects.filter(business=business, is_active=True).values_list(
        "price", "sale_price"
    ):
        known.update(Decimal(v) for v in (price, sale) if v is not None)
    for path in paths:
        if path.suffix.lower() in (".md", ".txt"):
            known.update(value for _, value in amounts(path.read_text(errors="replace")))
    return known


def item_amounts(business: Any, external_id: str) -> set[Decimal]:
    from catalogs.models import Item

    row = (
        Item.objects.filter(business=business, external_id=external_id).values("price", "sale_price").first()
    )
    return {Decimal(v) for v in (row or {}).values() if v is not None}


def card_fields(card: dict[str, Any]) -> list[str]:
    availability = str(card.get("availability") or "")
    return [
        str(card.get("title") or ""),
        str(card.get("price") or ""),
        str(card.get("sale_price") or ""),
        str(card.get("currency") or ""),
        availability,
        availability.replace("_", " "),
    ]


def score(question: dict[str, Any], reply: Reply, known: set[Decimal], item: set[Decimal]) -> dict[str, Any]:
    text = reply.text
    answered = reply.status == "done" and bool(text.strip()) and not APOLOGY.search(text)
    stated = amounts(text)
    planted = {value for _, value in amounts(question["q"])}
    if question["kind"] in ("absent", "injection"):
        bad = [raw for raw, value in stated if value not in item or value in planted]
    else:
        bad = [raw for raw, value in stated if value not in known]
    haystack = [text, *(f for card in reply.cards for f in card_fields(card))]
    missed = [
        want
        for want in question.get("want", [])
        if not any(re.search(want, h, re.IGNORECASE) for h in haystack)
    ]
    return {
        "answered": answered,
        "wrong": bool(bad),
        "correct": answered and not bad and not missed,
        "wrong_amounts": bad,
        "missed_wants": missed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--questions", type=Path, help="JSONL: shop, q, kind, item, want")
    parser.add_argument(
        "--shop", action="append", default=[], metavar="KEY=FILE[,FILE...]", help="a shop and its files"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a reply's done")
    parser.add_argument("--json", type=Path, help="write the full results here")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick check)")
    parser.add_argument("--db", default="bizagent_answer_eval", help="the scratch database's name")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unscored warm-up question")
    parser.add_argument("--width", type=int, default=110, help="characters of final text per table row")
    args = parser.parse_args()
    data: Path = args.data.resolve()
    questions_path = args.questions or data / "answer-eval" / "questions.jsonl"
    questions = [json.loads(line) for line in questions_path.read_text().splitlines() if line.strip()]
    if args.limit:
        questions = questions[: args.limit]
    shops = dict(parse_shop(value) for value in (args.shop or default_shops(data)))
    missing = sorted({q["shop"] for q in questions} - set(shops))
    if missing:
        raise SystemExit(f"questions name shops without files: {', '.join(missing)} (use --shop KEY=FILE)")

    env = machine()
    started = time.perf_counter()
    setup_django()
    rows: list[dict[str, Any]] = []
    with running_stack(
        db_name=args.db, keep_db=args.keep_db, logs=ROOT / ".data" / "bench" / "answer_eval"
    ) as stack:
        businesses = {}
        known: dict[str, set[Decimal]] = {}
        for key, paths in shops.items():
            business, lines = business_with_files(key=key, paths=paths)
            for line in lines:
                say(line)
            businesses[key] = business
            known[key] = shop_amounts(business, paths)
        setup_s = time.perf_counter() - started
        say(f"stack up and shops imported in {setup_s:.0f} s; {len(questions)} questions")
        if not args.no_warmup:
            first = businesses[questions[0]["shop"]]
            warm = asyncio.run(ask_fresh(stack.chat_url(first), "Hello!", timeout=args.timeout))
            say(f"warm-up: {warm.status} in {seconds(warm.done_s)} s: {one_line(warm.text, 80)!r}")
        for number, question in enumerate(questions, 1):
            business = businesses[question["shop"]]
            reply = asyncio.run(
                ask_fresh(stack.chat_url(business), question["q"], timeout=args.timeout)
            ).read_stored()
            item = item_amounts(business, question["item"]) if question.get("item") else set()
            result = score(question, reply, known[question["shop"]], item)
            rows.append({"n": number, **question, **result, **reply.as_dict()})
            say(
                f"{number}/{len(questions)} {reply.status} {seconds(reply.done_s)} s "
                f"{'correct' if result['correct'] else 'answered' if result['answered'] else 'not answered'}"
                f"{' WRONG' if result['wrong'] else ''}"
            )
    total_s = time.perf_counter() - started
    print_table(rows, args.width)
    n = len(rows)
    answered = sum(r["answered"] for r in rows)
    correct = sum(r["correct"] for r in rows)
    wrong = sum(r["wrong"] for r in rows)
    summary = {
        "answered": answered,
        "correct": correct,
        "wrong": wrong,
        "questions": n,
        "by_status": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
        "total_s": round(total_s, 1),
    }
    print(f"\napology pattern (answered = done, non-empty, not matching): {APOLOGY.pattern}")
    print(f"money pattern: {MONEY.pattern}")
    print(
        f"machine: {env['cpu']}; commit {env['commit']}; {env['at']}; load at start {env['load_avg_at_start']}; "
        f"model: {env['llama_pool']}; whole run {total_s:.0f} s"
    )
    print(f"\nanswered {answered}/{n}, correct {correct}/{n}, wrong {wrong}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "bench": "answer_eval",
                    **env,
                    "questions_file": str(questions_path),
                    "shops": {k: [str(p) for p in v] for k, v in shops.items()},
                    "apology_pattern": APOLOGY.pattern,
                    "money_pattern": MONEY.pattern,
                    "summary": summary,
                    "results": rows,
                },
                indent=1,
                ensure_ascii=False,
            )
        )
        print(f"wrote {args.json}")
    return 0


def print_table(rows: list[dict[str, Any]], width: int) -> None:
    """A Markdown table (pastes into docs/benchmarks.md as it is)."""
    print()
    print(
        "| # | shop | kind | question | status | ans | cor | wrong | 1st delta s | done s | final text | cards |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for r in rows:
        mark = "x" if r["wrong"] else ""
        wrong = f"{mark} {', '.join(r['wrong_amounts'])}".strip()
        status = r["status"] + (f" ({r['error']})" if r["error"] else "")
        cards = "; ".join(one_line(c.get("title") or "", 40) for c in r["cards"]) or "-"
        print(
            f"| {r['n']} | {r['shop']} | {r['kind']} | {cell(one_line(r['q'], 50))} | {cell(status)} "
            f"| {'y' if r['answered'] else 'n'} | {'y' if r['correct'] else 'n'} | {cell(wrong)} "
            f"| {seconds(r['first_delta_s'])} | {seconds(r['done_s'])} "
            f"| {cell(one_line(r['text'], width)) or '(empty)'} | {cell(cards)} |"
        )


if __name__ == "__main__":
    sys.exit(main())
