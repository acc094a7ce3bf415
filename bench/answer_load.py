"""Replies under load on the real stack and model: one visitor asking ten questions in a row, then ten
visitors asking at the same moment.

    .venv/bin/python bench/answer_load.py [--data DIR] [--shop KEY=FILE[,FILE...]]... [--timeout 180]
        [--json PATH] [--only sequential|burst] [--db NAME] [--keep-db] [--width 90]

The stack, its isolation and the shop import are those of bench/answer_eval.py (``bench/_answer_common.py``);
the default shop is the bike catalog with its FAQ (``bike=DATA/retrieval-eval/bike.csv,DATA/answer-eval/
bike-faq.md``; ``--shop`` replaces it, and the questions below are about bikes).

- sequential: one visitor, one conversation, the ten ``QUESTIONS`` below, each sent when the previous reply
  is done (``message.done``) or has given up (``--timeout``);
- burst: ten new visitors connect and say hello, then all send one question each (the same ten) in the same
  instant; with the embedded llama.cpp server that is ten replies for one inference slot.

For each reply: answered (ended ``done`` with non-empty text that is not an apology, the pattern of
answer_eval.py), status, the wait (message sent -> first delta) and the total (sent -> ``message.done``).
Summary per part: answered n/10, median and max wait, max total.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from _answer_common import (
    DEFAULT_DATA,
    ROOT,
    Reply,
    Visitor,
    business_with_files,
    machine,
    median,
    one_line,
    parse_shop,
    running_stack,
    say,
    seconds,
    setup_django,
)
from answer_eval import APOLOGY

# A customer of a bike shop, as they would write in a chat: prices, stock, FAQ (hours, delivery, returns,
# workshop, payment) and product advice. Written for this bench, not the eval set's questions.
QUESTIONS = [
    "hi, do you have city bikes?",
    "how much is the Gazelle city bike in size M?",
    "is the red one in size L in stock?",
    "what helmets do you have for adults?",
    "do you deliver bikes, and what does it cost?",
    "are you open on Sundays?",
    "how much is a brass bell?",
    "can I pay for an e-bike in instalments?",
    "I got a flat tyre, can you fix it today?",
    "can I return a lock I haven't used?",
]


def answered(reply: Reply) -> bool:
    return reply.status == "done" and bool(reply.text.strip()) and not APOLOGY.search(reply.text)


async def sequential(url: str, timeout: float) -> list[Reply]:
    replies = []
    async with Visitor(url) as visitor:
        for number, question in enumerate(QUESTIONS, 1):
            reply = await visitor.ask(question, timeout=timeout)
            say(f"sequential {number}/{len(QUESTIONS)}: {reply.status} in {seconds(reply.done_s)} s")
            replies.append(reply)
    return replies


async def burst(url: str, timeout: float) -> list[Reply]:
    visitors = [Visitor(url) for _ in QUESTIONS]
    await asyncio.gather(*(v.__aenter__() for v in visitors))
    try:
        # Everyone connected and greeted first: the ten messages then leave within a millisecond or two.
        return list(
            await asyncio.gather(
                *(v.ask(q, timeout=timeout) for v, q in zip(visitors, QUESTIONS, strict=True))
            )
        )
    finally:
        await asyncio.gather(*(v.__aexit__(None, None, None) for v in visitors))


def summarise(name: str, replies: list[Reply], seconds_taken: float) -> dict[str, Any]:
    waits = [r.first_delta_s for r in replies if r.first_delta_s is not None]
    totals = [r.done_s for r in replies if r.done_s is not None and r.status not in ("timeout", "closed")]
    med = median(waits)
    return {
        "part": name,
        "answered": sum(answered(r) for r in replies),
        "replies": len(replies),
        "all_answered": all(answered(r) for r in replies),
        "statuses": {s: sum(r.status == s for r in replies) for s in sorted({r.status for r in replies})},
        "wait_median_s": None if med is None else round(med, 2),
        "wait_max_s": round(max(waits), 2) if waits else None,
        "without_first_delta": sum(r.first_delta_s is None for r in replies),
        "total_max_s": round(max(totals), 2) if totals else None,
        "part_s": round(seconds_taken, 1),
    }


def print_part(name: str, replies: list[Reply], summary: dict[str, Any], width: int) -> None:
    print(f"\n### {name}\n")
    print("| # | question | status | answered | wait s | total s | final text |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for number, r in enumerate(replies, 1):
        status = (
            r.status + (f" ({r.error})" if r.error else "") + (f" [handoff {r.handoff}]" if r.handoff else "")
        )
        text = one_line(r.text, width).replace("|", "\\|") or "(empty)"
        print(
            f"| {number} | {r.question} | {status} | {'y' if answered(r) else 'n'} "
            f"| {seconds(r.first_delta_s)} | {seconds(r.done_s)} | {text} |"
        )
    print(
        f"\n{name}: answered {summary['answered']}/{summary['replies']} "
        f"(all answered: {'yes' if summary['all_answered'] else 'no'}), statuses {summary['statuses']}, "
        f"wait median {seconds(summary['wait_median_s'])} s, max {seconds(summary['wait_max_s'])} s "
        f"({summary['without_first_delta']} without any delta), total max {seconds(summary['total_max_s'])} s, "
        f"part took {summary['part_s']} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--shop", action="append", default=[], metavar="KEY=FILE[,FILE...]")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a reply's done")
    parser.add_argument("--json", type=Path, help="write the full results here")
    parser.add_argument("--only", choices=("sequential", "burst"), help="run one part only")
    parser.add_argument("--db", default="bizagent_answer_load", help="the scratch database's name")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--width", type=int, default=90, help="characters of final text per table row")
    args = parser.parse_args()
    data: Path = args.data.resolve()
    shop = (
        args.shop[-1]
        if args.shop
        else (f"bike={data / 'retrieval-eval' / 'bike.csv'},{data / 'answer-eval' / 'bike-faq.md'}")
    )
    key, paths = parse_shop(shop)

    env = machine()
    setup_django()
    parts: list[tuple[str, list[Reply], dict[str, Any]]] = []
    logs = ROOT / ".data" / "bench" / "answer_load"
    with running_stack(db_name=args.db, keep_db=args.keep_db, logs=logs) as stack:
        business, lines = business_with_files(key=key, paths=paths)
        for line in lines:
            say(line)
        url = stack.chat_url(business)

        async def warm() -> Reply:
            async with Visitor(url) as visitor:
                return await visitor.ask("Hello!", timeout=args.timeout)

        warmup = asyncio.run(warm())
        say(f"warm-up: {warmup.status} in {seconds(warmup.done_s)} s")
        for name, run in (("sequential", sequential), ("burst", burst)):
            if args.only and args.only != name:
                continue
            started = time.perf_counter()
            replies = [reply.read_stored() for reply in asyncio.run(run(url, args.timeout))]
            parts.append((name, replies, summarise(name, replies, time.perf_counter() - started)))
    titles = {
        "sequential": "(a) one visitor, ten questions in a row",
        "burst": "(b) ten visitors, one question each, sent at the same moment",
    }
    for name, replies, summary in parts:
        print_part(titles[name], replies, summary, args.width)
    print(
        f"\nmachine: {env['cpu']}; commit {env['commit']}; {env['at']}; load at start {env['load_avg_at_start']}; "
        f"model: {env['llama_pool']}"
    )
    for _, _, summary in parts:
        print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "bench": "answer_load",
                    **env,
                    "shop": {key: [str(p) for p in paths]},
                    "apology_pattern": APOLOGY.pattern,
                    "parts": [
                        {**summary, "results": [r.as_dict() for r in replies]}
                        for _, replies, summary in parts
                    ],
                },
                indent=1,
                ensure_ascii=False,
            )
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
