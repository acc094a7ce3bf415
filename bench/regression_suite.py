"""The regression suite on a 1,000-item catalog: how long generating and running it takes, and what it asks
of the inference pool.

    .venv/bin/python bench/regression_suite.py [--items 1000] [--sample 20] [--languages en,de]

In a scratch database (bench/_scratch.py): a generated catalog of ``--items`` items and an FAQ of 12 headings
are imported (with the local embedder), the agent's languages set, then
1. ``cases_regenerate``: seconds, cases by kind;
2. a run (``run_start`` + ``run_execute``, in this process, as ``manage.py regressions run`` does): seconds,
   ms per case (median, p95, max), passed/failed, inference calls and tokens (a configured LLAMA_POOL with
   AGENT_MODEL_SENTENCES > 0 makes one chat call per item question; the embedded default makes none);
   (``--test-server``: the tests' inference server stands in for the pool);
3. ``cases_regenerate`` again (nothing changes) and a second run: its regressions against the first (0).
Prints one JSON line and writes bench/results/regression_suite.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django

RESULTS = ROOT / "bench" / "results" / "regression_suite.json"
NOUNS = ["tent", "stove", "jacket", "backpack", "sleeping bag", "lantern", "boot", "mat", "pole", "bottle"]
ADJECTIVES = [
    "alpine",
    "trail",
    "summit",
    "ridge",
    "canyon",
    "glacier",
    "forest",
    "desert",
    "coastal",
    "meadow",
]
FAQ_HEADINGS = [
    ("Returns", "Unused gear can be returned within 30 days for a full refund."),
    ("Shipping", "Orders over 50 EUR ship free within Germany in two working days."),
    ("Opening hours", "Monday to Friday 10:00 to 19:00, Saturday 9:00 to 18:00."),
    ("Warranty", "Every tent carries a five year warranty on seams and poles."),
    ("Repairs", "Our workshop repairs zips and seams within one week."),
    ("Gift vouchers", "Gift vouchers are valid for three years from the date of purchase."),
    ("Payment", "We accept cards, PayPal and invoice for registered customers."),
    ("Click and collect", "Orders placed before noon are ready for pickup the same afternoon."),
    ("Rentals", "Tents and stoves can be rented by the weekend from 25 EUR."),
    ("Price match", "We match the price of any German shop that has the item in stock."),
    ("Student discount", "Students get ten percent off with a valid student card."),
    ("Contact", "Write to help@trail.example or call 030 1234567 during opening hours."),
]


def catalog_csv(items: int) -> str:
    rng = random.Random(7)
    rows = ["id,title,description,availability,price,link,image_link,brand,product_type"]
    for i in range(items):
        noun, adjective = rng.choice(NOUNS), rng.choice(ADJECTIVES)
        title = f"{adjective.title()} {noun} {i:04d}"
        availability = rng.choice(["in stock", "in stock", "out of stock", "preorder"])
        price = f"{rng.randint(5, 900)}.{rng.choice(['00', '50', '90', '99'])} EUR"
        rows.append(
            f"SKU-{i:05d},{title},A {adjective} {noun} for the outdoors.,{availability},{price},"
            f"https://shop.example/p/{i},https://shop.example/i/{i}.jpg,Trail,{noun}s"
        )
    return "\n".join(rows) + "\n"


def faq_markdown() -> str:
    return "# Trail shop help\n\n" + "\n\n".join(f"## {h}\n{text}" for h, text in FAQ_HEADINGS) + "\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--languages", default="en,de")
    parser.add_argument(
        "--test-server",
        action="store_true",
        help="point LLAMA_POOL at the tests' OpenAI-compatible server (tests/inference_server.py) so that the "
        "agent adds its model sentences: counts the calls a configured pool gets",
    )
    args = parser.parse_args()
    os.environ["REGRESSION_SAMPLE_ITEMS"] = str(args.sample)
    if args.test_server:
        from tests.inference_server import InferenceServer

        server = InferenceServer(reply="Happy to help with that. Anything else?").start()
        os.environ["LLAMA_POOL"], os.environ["LLAMA_MODEL"] = server.url, server.model
    setup_django()

    from agents.services import agent_update
    from businesses.services import business_create
    from catalogs.services.imports import import_file
    from regressions import selectors
    from regressions.models import RegressionCase, RegressionResult, RegressionRun
    from regressions.services import cases_regenerate, run_execute, run_start

    out: dict[str, object] = {
        "items": args.items,
        "sample": args.sample,
        "platform": platform.processor() or platform.machine(),
    }
    out["test_server"] = args.test_server
    with scratch_database("bench_regression_suite"), tempfile.TemporaryDirectory() as tmp:
        business = business_create(name="Trail bench shop")
        feed, faq = Path(tmp) / "feed.csv", Path(tmp) / "faq.md"
        feed.write_text(catalog_csv(args.items))
        faq.write_text(faq_markdown())
        t = time.perf_counter()
        import_file(business=business, path=feed, embed=True)
        import_file(business=business, path=faq, embed=True)
        out["import_seconds"] = round(time.perf_counter() - t, 1)
        agent_update(business, languages=[code for code in args.languages.split(",") if code != "en"])

        t = time.perf_counter()
        generated = cases_regenerate(business=business)
        out["generate_seconds"] = round(time.perf_counter() - t, 3)
        out["cases"] = generated.active
        out["cases_by_kind"] = {
            kind: RegressionCase.objects.filter(business=business, kind=kind).count()
            for kind in RegressionCase.Kind.values
        }
        runs = []
        for _ in range(2):
            t = time.perf_counter()
            run = run_execute(
                run_id=run_start(business=business, trigger=RegressionRun.Trigger.API, enqueue=False).pk
            )
            assert run is not None
            seconds = time.perf_counter() - t
            per_case = [
                float(ms)
                for ms in RegressionResult.objects.filter(run=run).values_list("duration_ms", flat=True)
            ]
            runs.append(
                {
                    "seconds": round(seconds, 1),
                    "case_ms_median": round(statistics.median(per_case)),
                    "case_ms_p95": round(percentile(per_case, 0.95)),
                    "case_ms_max": round(max(per_case)),
                    "passed": run.passed,
                    "failed": run.failed,
                    "regressions": len(selectors.run_report(run).regressions),
                    "inference_calls": run.inference_calls,
                    "prompt_tokens": run.prompt_tokens,
                    "completion_tokens": run.completion_tokens,
                    "failing": [
                        (r.question, r.missing)
                        for r in RegressionResult.objects.filter(run=run, passed=False)
                    ][:10],
                }
            )
            cases_regenerate(business=business)
        out["runs"] = runs
    if args.test_server:
        out["test_server_chat_requests"] = server.chat_requests
        server.stop()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
