"""Hybrid search latency: one business of 100k items in a database of 500k items.

    .venv/bin/python bench/search_latency.py [--items-per-business 100000] [--businesses 5] [--queries 200]

Builds a scratch database (dropped afterwards) with ``--businesses`` synthetic tenants (slugs ``bench-…``)
of ``--items-per-business`` items each, generated inside PostgreSQL: titles, brands, categories and
descriptions drawn from a fixed vocabulary (so words have realistic document frequencies: categories are
common, model names rare), SKUs, prices, stock, and 384-dimension vectors (the sum of two random Gaussian
basis vectors: every item distinct, no structure for the index to exploit, i.e. a pessimistic case for
HNSW). The generated columns (search_vector, search_trigrams) and all indexes are the real ones.

Then ``catalogs.search.search`` runs ``--queries`` queries against the first tenant, with the query
vector given (so the figures exclude query embedding): keyword queries, chat questions, SKUs and typos.
Query embedding with the local model is timed separately, as is the model's throughput on titles and on
long descriptions. Prints one JSON line and writes bench/results/search_latency.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django

RESULTS = ROOT / "bench" / "results" / "search_latency.json"

CATEGORIES = [
    "bikes",
    "helmets",
    "lights",
    "locks",
    "bags",
    "clothing",
    "tyres",
    "tools",
    "pumps",
    "saddles",
    "pedals",
    "brakes",
    "chains",
    "gears",
    "wheels",
    "bottles",
    "racks",
    "mudguards",
    "bells",
    "mirrors",
    "gloves",
    "shoes",
    "jackets",
    "trousers",
    "socks",
    "tents",
    "stoves",
    "lamps",
    "drills",
    "screws",
    "paint",
    "ladders",
    "brushes",
    "cables",
    "bulbs",
    "plugs",
    "fixings",
    "hammers",
    "saws",
    "tapes",
    "glue",
    "sealant",
    "filler",
    "bread",
    "pastry",
    "cakes",
    "coffee",
    "tea",
    "cookies",
    "tarts",
]
WORDS = [
    "black",
    "white",
    "red",
    "blue",
    "green",
    "grey",
    "graphite",
    "sage",
    "yellow",
    "orange",
    "small",
    "large",
    "medium",
    "compact",
    "light",
    "heavy",
    "waterproof",
    "foldable",
    "electric",
    "manual",
    "automatic",
    "rechargeable",
    "wireless",
    "classic",
    "premium",
    "basic",
    "pro",
    "ultra",
    "mini",
    "maxi",
    "steel",
    "aluminium",
    "carbon",
    "wooden",
    "leather",
    "cotton",
    "wool",
    "rubber",
    "plastic",
    "brass",
    "copper",
    "glass",
    "ceramic",
    "kids",
    "adult",
    "women",
    "men",
    "unisex",
    "road",
    "city",
    "mountain",
    "trail",
    "gravel",
    "touring",
    "cargo",
    "folding",
    "racing",
    "comfort",
    "sport",
    "winter",
    "summer",
    "rain",
    "wind",
    "sun",
    "night",
    "day",
    "indoor",
    "outdoor",
    "garden",
    "kitchen",
    "bathroom",
    "office",
    "travel",
    "family",
    "fast",
    "slow",
    "quiet",
    "strong",
    "soft",
    "hard",
    "warm",
    "cool",
    "fresh",
    "organic",
    "vegan",
    "gluten",
    "free",
    "seeded",
    "whole",
    "dark",
    "milk",
    "chocolate",
    "almond",
    "vanilla",
    "lemon",
    "berry",
    "apple",
    "cherry",
    "walnut",
    "hazel",
    "rye",
    "spelt",
    "wheat",
    "oat",
    "barley",
    "corn",
    "rice",
]
FILLER = [
    "i",
    "need",
    "something",
    "for",
    "my",
    "do",
    "you",
    "have",
    "a",
    "that",
    "is",
    "good",
    "can",
    "you",
    "recommend",
    "looking",
    "for",
    "what",
    "about",
]


def syllable_words(n: int, seed: int) -> list[str]:
    """Made-up model and brand names ("Torvak", "Melindo"): rare words, as real model names are."""
    rng = random.Random(seed)
    onsets, vowels, codas = (
        [
            "b",
            "c",
            "d",
            "f",
            "g",
            "k",
            "l",
            "m",
            "n",
            "p",
            "r",
            "s",
            "t",
            "v",
            "z",
            "br",
            "tr",
            "kr",
            "pl",
            "st",
        ],
        ["a", "e", "i", "o", "u"],
        ["n", "r", "s", "l", "x"],
    )
    names: set[str] = set()
    while len(names) < n:
        parts = [rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(2, 3))]
        names.add("".join(parts) + rng.choice([*codas, ""]))
    return sorted(names)


def generate(business_ids: list[int], per_business: int) -> None:
    """Insert the synthetic catalog with one INSERT … SELECT per business (generated columns included)."""
    import numpy as np
    from django.db import connection

    models = syllable_words(3000, seed=1)
    brands = syllable_words(3200, seed=2)[-200:]
    rng = np.random.default_rng(7)
    basis = rng.standard_normal((2000, 384)).astype(np.float32)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_basis (id int PRIMARY KEY, v vector(384))")
        with cursor.copy("COPY bench_basis (id, v) FROM STDIN") as copy:
            for i, row in enumerate(basis):
                copy.write_row((i, "[" + ",".join(f"{x:.5f}" for x in row) + "]"))
        cursor.execute("CREATE TEMP TABLE bench_words (kind text, id int, w text, PRIMARY KEY (kind, id))")
        for kind, words in (("c", CATEGORIES), ("w", WORDS), ("m", models), ("b", brands)):
            with cursor.copy("COPY bench_words (kind, id, w) FROM STDIN") as copy:
                for i, word in enumerate(words):
                    copy.write_row((kind, i, word))
        counts = {"c": len(CATEGORIES), "w": len(WORDS), "m": len(models), "b": len(brands)}
        # Indexes are built after the rows: far faster than maintaining them row by row.
        cursor.execute("DROP INDEX IF EXISTS item_embedding_hnsw, item_search_vector, item_search_trigrams")
        for offset, business_id in enumerate(business_ids):
            cursor.execute(
                """
                INSERT INTO catalogs_item (business_id, external_id, item_group_id, title, description, price,
                    sale_price, currency, availability, brand, category, url, image_url, attributes, variants,
                    is_active, content_hash, embedding, embedding_model, created_at, updated_at)
                SELECT %(business)s, 'SKU-' || %(offset)s || '-' || lpad(g::text, 6, '0'), '',
                    initcap(m.w) || ' ' || w1.w || ' ' || c.w || ' ' || (g %% 90 + 10),
                    'A ' || w2.w || ' ' || w3.w || ' ' || c.w || ' by ' || initcap(b.w) || ' for ' || w4.w
                        || ' use, ' || w5.w || ' finish and ' || w1.w || ' details.',
                    ((g * 37) %% 50000) / 100.0 + 1, NULL, 'EUR',
                    CASE WHEN g %% 10 = 0 THEN 'out_of_stock' ELSE 'in_stock' END,
                    initcap(b.w), c.w, '', '', '{}'::jsonb, '[]'::jsonb, true, '',
                    a1.v + a2.v, 'bench-random', now(), now()
                FROM generate_series(1, %(n)s) AS g
                JOIN bench_words c ON c.kind = 'c' AND c.id = (g * 7 + %(offset)s) %% %(nc)s
                JOIN bench_words m ON m.kind = 'm' AND m.id = (g * 13 + %(offset)s * 101) %% %(nm)s
                JOIN bench_words b ON b.kind = 'b' AND b.id = (g * 17 + %(offset)s) %% %(nb)s
                JOIN bench_words w1 ON w1.kind = 'w' AND w1.id = (g * 3) %% %(nw)s
                JOIN bench_words w2 ON w2.kind = 'w' AND w2.id = (g * 5 + 1) %% %(nw)s
                JOIN bench_words w3 ON w3.kind = 'w' AND w3.id = (g * 11 + 2) %% %(nw)s
                JOIN bench_words w4 ON w4.kind = 'w' AND w4.id = (g * 19 + 3) %% %(nw)s
                JOIN bench_words w5 ON w5.kind = 'w' AND w5.id = (g * 23 + 4) %% %(nw)s
                JOIN bench_basis a1 ON a1.id = (g + %(offset)s * 7) %% 1000
                JOIN bench_basis a2 ON a2.id = 1000 + ((g / 1000) + %(offset)s * 13) %% 1000
                """,
                {
                    "business": business_id,
                    "offset": offset,
                    "n": per_business,
                    "nc": counts["c"],
                    "nm": counts["m"],
                    "nb": counts["b"],
                    "nw": counts["w"],
                },
            )
        cursor.execute("SET maintenance_work_mem = '4GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 2")
        cursor.execute("CREATE INDEX item_search_vector ON catalogs_item USING gin (search_vector)")
        cursor.execute("CREATE INDEX item_search_trigrams ON catalogs_item USING gin (search_trigrams)")
        cursor.execute(
            "CREATE INDEX item_embedding_hnsw ON catalogs_item USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        cursor.execute("ANALYZE catalogs_item")


def queries(business_id: int, count: int) -> list[tuple[str, list[float]]]:
    """(query text, query vector) pairs: a vector near one of the tenant's items, words from that item."""
    import numpy as np
    from django.db import connection

    rng = random.Random(11)
    nrng = np.random.default_rng(11)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT external_id, title, brand, category, embedding::text FROM catalogs_item "
            "WHERE business_id = %s ORDER BY md5(external_id) LIMIT %s",
            [business_id, count],
        )
        rows = cursor.fetchall()
    out = []
    for n, (sku, title, brand, category, vector_text) in enumerate(rows):
        words = title.split()
        kind = n % 4
        if kind == 0:  # keywords
            text = " ".join(words[:2]) + f" {category}"
        elif kind == 1:  # a chat question
            text = f"{rng.choice(FILLER)} {rng.choice(FILLER)} {words[1]} {category} from {brand} under 200"
        elif kind == 2:  # a SKU
            text = sku.lower() if n % 8 == 2 else f"do you still have {sku}?"
        else:  # a typo in a model name
            name = words[0]
            i = rng.randrange(1, len(name) - 1)
            text = name[:i] + name[i + 1 :] + f" {words[1]}"
        vector = np.array(json.loads(vector_text), dtype=np.float32)
        vector = vector / np.linalg.norm(vector) + nrng.standard_normal(384).astype(np.float32) * 0.02
        out.append((text, (vector / np.linalg.norm(vector)).tolist()))
    return out


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def embedder_figures() -> dict[str, float]:
    """Local model: titles/s, descriptions/s (about 160 tokens each), ms per single query."""
    from catalogs.embeddings import LocalMiniLMBackend

    backend = LocalMiniLMBackend()
    rng = random.Random(3)
    titles = [f"{rng.choice(WORDS)} {rng.choice(CATEGORIES)} {rng.choice(WORDS)} {n}" for n in range(512)]
    descriptions = [
        " ".join(rng.choice(WORDS + CATEGORIES + FILLER) for _ in range(150)) + f" {n}" for n in range(64)
    ]
    backend.embed(titles[:32])  # warm up
    started = time.perf_counter()
    backend.embed(titles)
    titles_per_s = len(titles) / (time.perf_counter() - started)
    started = time.perf_counter()
    backend.embed(descriptions)
    descriptions_per_s = len(descriptions) / (time.perf_counter() - started)
    tokens = statistics.mean(len(backend.tokenizer.encode(d).ids) for d in descriptions)
    single = []
    for n in range(100):
        started = time.perf_counter()
        backend.embed([f"do you have a {rng.choice(WORDS)} {rng.choice(CATEGORIES)} under {n}"])
        single.append((time.perf_counter() - started) * 1000)
    return {
        "titles_per_s": round(titles_per_s, 1),
        "descriptions_per_s": round(descriptions_per_s, 1),
        "description_tokens": round(tokens),
        "query_embed_ms_p50": round(percentile(single, 50), 2),
        "query_embed_ms_p95": round(percentile(single, 95), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-per-business", type=int, default=100_000)
    parser.add_argument("--businesses", type=int, default=5)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch database (bench_search_latency)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the database an earlier --keep run kept")
    args = parser.parse_args()
    setup_django()

    from django.db import connection

    from businesses.models import Business
    from catalogs.search import search, vector_plan
    from catalogs.search.prepare import HNSW_EF_SEARCH

    result: dict[str, object] = {"benchmark": "search_latency"}
    with scratch_database("bench_search_latency", keep=args.keep, reuse=args.reuse) as reused:
        started = time.perf_counter()
        if reused:
            tenants = list(Business.objects.filter(slug__startswith="bench-latency-").order_by("slug"))
        else:
            tenants = [
                Business.objects.create(name=f"bench tenant {n}", slug=f"bench-latency-{n}")
                for n in range(args.businesses)
            ]
            generate([t.pk for t in tenants], args.items_per_business)
            result["generate_seconds"] = round(time.perf_counter() - started, 1)
        target = tenants[0]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM catalogs_item")
            result["items_total"] = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM catalogs_item WHERE business_id = %s", [target.pk])
            result["items_in_business"] = cursor.fetchone()[0]
        result["vector_plan"] = vector_plan(target)
        workload = queries(target.pk, args.queries)
        for text, vector in workload[:20]:  # warm the caches
            search(target, text, limit=10, query_vector=vector)
        timings = []
        empty = 0
        for text, vector in workload:
            began = time.perf_counter()
            hits = search(target, text, limit=10, query_vector=vector)
            timings.append((time.perf_counter() - began) * 1000)
            empty += not hits
        by_kind: dict[str, list[float]] = {"keywords": [], "question": [], "sku": [], "typo": []}
        for n, ms in enumerate(timings):
            by_kind[list(by_kind)[n % 4]].append(ms)
        # Evidence of the plan the vector leg gets on the large tenant.
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}")
            cursor.execute(
                "EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM catalogs_item i WHERE i.business_id = %s "
                "AND i.is_active AND i.embedding IS NOT NULL ORDER BY i.embedding <=> %s::vector LIMIT 40",
                [target.pk, str(workload[0][1])],
            )
            plan = [re.sub(r"'\[[^\]]*\]'", "'[…]'", row[0]) for row in cursor.fetchall()]
            cursor.execute("COMMIT")
        result.update(
            {
                "queries": len(timings),
                "queries_without_hits": empty,
                "search_ms_p50": round(percentile(timings, 50), 2),
                "search_ms_p95": round(percentile(timings, 95), 2),
                "search_ms_max": round(max(timings), 2),
                "search_ms_p95_by_kind": {k: round(percentile(v, 95), 2) for k, v in by_kind.items()},
                "vector_leg_plan": plan,
            }
        )
    result["embedder"] = embedder_figures()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
