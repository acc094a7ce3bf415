"""Catalog import throughput: a generated 100k-row Meta-feed CSV through the real import service.

    .venv/bin/python bench/import_catalog.py [--rows 100000] [--embed-rows 2000]

In a scratch database (bench/_scratch.py):
1. import ``--rows`` rows without embeddings (parse + validate + upsert + commit): seconds and rows/s
   (budget: under 30 s for 100k rows);
2. re-import the same file: everything unchanged, nothing written;
3. import ``--embed-rows`` rows with the local embedder (EMBEDDINGS_BACKEND) into another business: rows/s
   end to end, and the embedding phase alone; then re-import that file: the re-embedded count must be 0.
Prints one JSON line and writes bench/results/import_catalog.json. Exit status 1 when a budget is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django

if TYPE_CHECKING:
    from businesses.models import Business

RESULTS = ROOT / "bench" / "results" / "import_catalog.json"
BUDGET_SECONDS_100K = 30.0
SEARCH_COLUMN_EXPRESSIONS = {
    "tsvector": "length(setweight(to_tsvector('english', title), 'A') || to_tsvector('english', description))",
    "trigrams": "cardinality(catalogs_trigrams(title || ' ' || external_id))",
}
WORDS = [
    "waterproof",
    "breathable",
    "lightweight",
    "merino",
    "insulated",
    "packable",
    "durable",
    "recycled",
    "ripstop",
    "alpine",
    "trail",
    "summit",
    "camp",
    "hiking",
    "trekking",
    "winter",
    "summer",
    "ultralight",
    "technical",
    "warm",
    "windproof",
    "reflective",
]
NOUNS = ("jacket", "tent", "boot", "backpack", "sleeping bag", "headlamp", "stove", "glove", "sock", "pole")
BRANDS = ("Ridgeline", "Northwind", "Alpenglow", "Cairn", "Summit Forge", "Fjellstad", "Kestrel")


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["# Required | Max 100 characters", "# Required | Max 200 characters"] + ["# Optional"] * 9
        )
        writer.writerow(
            [
                "id",
                "title",
                "description",
                "availability",
                "condition",
                "price",
                "link",
                "image_link",
                "brand",
                "product_type",
                "color",
            ]
        )
        for n in range(rows):
            noun = rng.choice(NOUNS)
            title = f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {noun} {n}"
            description = " ".join(rng.choices(WORDS, k=rng.randint(15, 40))).capitalize() + "."
            writer.writerow(
                [
                    f"SKU-{n:07d}",
                    title,
                    description,
                    "in stock" if rng.random() > 0.1 else "out of stock",
                    "new",
                    f"{rng.randint(5, 900)}.{rng.choice(('00', '50', '95', '99'))} EUR",
                    f"https://shop.example/p/{n}",
                    f"https://shop.example/img/{n}.jpg",
                    rng.choice(BRANDS),
                    noun + "s",
                    rng.choice(("black", "red", "blue", "green", "")),
                ]
            )


def head(source: Path, destination: Path, rows: int) -> None:
    with source.open(encoding="utf-8") as f, destination.open("w", encoding="utf-8") as out:
        for n, line in enumerate(f):
            if n >= rows + 2:
                break
            out.write(line)


def backend_cpu_seconds() -> float | None:
    """CPU seconds used so far by this connection's PostgreSQL backend (same machine: the embedded server)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU: dict[str, dict[str, float | None]] = {}


def run_import(business: Business, path: Path, *, embed: bool, label: str) -> tuple[object, float]:
    """Wall seconds of one import; its CPU seconds (this process and the database backend) go to CPU[label].

    On a shared machine wall time includes waiting for a core; CPU time does not, so the sum of the two CPU
    figures is what the import would take on an idle machine with one core for each side."""
    from catalogs.services.imports import import_file

    pg_before, own_before = backend_cpu_seconds(), os.times()
    started = time.perf_counter()
    imp = import_file(business=business, path=path, mode="full", embed=embed)
    seconds = time.perf_counter() - started
    own_after, pg_after = os.times(), backend_cpu_seconds()
    CPU[label] = {
        "python": round(own_after.user + own_after.system - own_before.user - own_before.system, 2),
        "postgres": round(pg_after - pg_before, 2)
        if pg_before is not None and pg_after is not None
        else None,
    }
    if imp.state != "succeeded" or imp.failed_count:
        raise SystemExit(f"import failed: {imp.error_message or imp.error_report[:5]}")
    return imp, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--embed-rows", type=int, default=500)
    args = parser.parse_args()
    setup_django()
    from django.conf import settings
    from django.db import connection

    from businesses.models import Business
    from catalogs.embeddings import get_backend
    from catalogs.importers import open_source

    with tempfile.TemporaryDirectory() as tmp, scratch_database("bench_import_catalog"):
        folder = Path(tmp)
        settings.MEDIA_ROOT = str(folder / "media")
        big = folder / "catalog.csv"
        t0 = time.perf_counter()
        generate(big, args.rows)
        generate_seconds = time.perf_counter() - t0
        file_mb = round(big.stat().st_size / 1e6, 1)
        small = folder / "subset.csv"
        head(big, small, args.embed_rows)

        t0 = time.perf_counter()
        parsed = sum(1 for _ in open_source(big, filename=big.name).results())
        parse_only_s = time.perf_counter() - t0
        assert parsed == args.rows

        plain = Business.objects.create(name="bench plain", slug="bench-plain")
        first, first_s = run_import(plain, big, embed=False, label="import_no_embed")
        # What the search columns (catalogs/migrations/0002: weighted tsvector, word trigrams) cost to
        # compute for these rows: part of every insert, measured apart from the import.
        search_columns_s = {}
        with connection.cursor() as cursor:
            for name, expression in SEARCH_COLUMN_EXPRESSIONS.items():
                t0 = time.perf_counter()
                cursor.execute(
                    f"SELECT sum({expression}) FROM catalogs_item WHERE business_id = %s", [plain.pk]
                )
                search_columns_s[name] = round(time.perf_counter() - t0, 2)
        second, second_s = run_import(plain, big, embed=False, label="reimport_unchanged")

        backend = get_backend()
        backend.embed(["warm up"])  # model load is not import throughput
        embedded = Business.objects.create(name="bench embed", slug="bench-embed")
        third, third_s = run_import(embedded, small, embed=True, label="import_with_embed")
        fourth, fourth_s = run_import(embedded, small, embed=True, label="reimport_with_embed")

    result = {
        "bench": "import_catalog",
        "rows": args.rows,
        "file_mb": file_mb,
        "generate_s": round(generate_seconds, 2),
        "parse_only_s": round(parse_only_s, 2),
        "import_no_embed_s": round(first_s, 2),
        "import_no_embed_rows_per_s": round(args.rows / first_s),
        "import_no_embed_created": first.created_count,
        "search_columns_compute_s": search_columns_s,
        "reimport_unchanged_s": round(second_s, 2),
        "reimport_unchanged_rows_per_s": round(args.rows / second_s),
        "reimport_unchanged": second.unchanged_count,
        "reimport_written": second.created_count + second.updated_count,
        "embed_backend": backend.name,
        "embed_rows": args.embed_rows,
        "import_with_embed_s": round(third_s, 2),
        "import_with_embed_rows_per_s": round(args.embed_rows / third_s, 1),
        "embed_phase_s": third.timings.get("embed"),
        "embedded": third.embedded_count,
        "reimport_with_embed_s": round(fourth_s, 2),
        "reimport_reembedded": fourth.embedded_count,
        "cpu_s": CPU,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "budget_s": BUDGET_SECONDS_100K,
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
    }
    result["ok"] = (
        (args.rows < 100_000 or first_s < BUDGET_SECONDS_100K)
        and result["reimport_reembedded"] == 0
        and result["reimport_written"] == 0
    )
    line = json.dumps(result)
    print(line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(line + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
