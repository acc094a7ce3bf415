"""Retrieval quality on the labelled set: nDCG@10 (graded) and recall@10 (grade 2), three ways.

    .venv/bin/python bench/retrieval_eval.py [--data bench/data/retrieval-eval] [--per-question]

Each shop's catalog (Meta feed CSV) goes through the real import pipeline into a scratch business of a scratch
database; every question is answered by ``catalogs.search.search`` inside its shop only, with
``mode="fulltext"``, ``mode="vector"`` and the default hybrid. nDCG uses linear gains (grade 1 or 2) over the
judged items; recall counts grade-2 items in the top 10. Prints one JSON line and writes
bench/results/retrieval_eval.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django

if TYPE_CHECKING:
    from businesses.models import Business

DATA = ROOT / "bench" / "data" / "retrieval-eval"
RESULTS = ROOT / "bench" / "results" / "retrieval_eval.json"
MODES = ("fulltext", "vector", "hybrid")
# An ablation, reported beside the three: hybrid without budget and stock read from the question.
VARIANTS = (*MODES, "hybrid_without_question_filters")
K = 10


def ndcg_at_k(ranked: list[str], grades: dict[str, int], k: int = K) -> float:
    dcg = sum(grades.get(item, 0) / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], grades: dict[str, int], k: int = K) -> float:
    wanted = {item for item, grade in grades.items() if grade == 2}
    if not wanted:
        return 0.0
    return len(wanted & set(ranked[:k])) / len(wanted)


def import_shop(slug: str, path: Path) -> Business:
    """The shop's catalog through the real import pipeline (parse, validate, upsert, embed); its business."""
    from businesses.models import Business
    from catalogs.services.imports import import_file

    business = Business.objects.create(name=f"bench {path.stem}", slug=slug)
    result = import_file(business=business, path=path, mode="upsert")
    if result.state != "succeeded" or result.failed_count:
        raise SystemExit(f"import of {path} failed: {result.error_message or result.error_report}")
    return business


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-question", action="store_true", help="also print each question's figures")
    args = parser.parse_args()
    setup_django()

    from catalogs.embeddings import embed_query
    from catalogs.search import search

    questions = [
        json.loads(line) for line in (args.data / "questions.jsonl").read_text().splitlines() if line
    ]
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (args.data / "qrels.tsv").open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels[row["qid"]][row["item_id"]] = int(row["grade"])

    scores: dict[str, dict[str, list[float]]] = {mode: {"ndcg": [], "recall": []} for mode in VARIANTS}
    per_question = []
    started = time.perf_counter()
    with scratch_database("bench_retrieval_eval"):
        shops = {}
        for shop in sorted({q["shop"] for q in questions}):
            shops[shop] = import_shop(f"bench-eval-{shop}", args.data / f"{shop}.csv")
        import_seconds = time.perf_counter() - started
        for question in questions:
            vector = embed_query(question["question"])
            row = {"qid": question["qid"]}
            for mode in VARIANTS:
                hits = search(
                    shops[question["shop"]],
                    question["question"],
                    limit=K,
                    query_vector=vector,
                    mode="hybrid" if mode.startswith("hybrid") else mode,  # type: ignore[arg-type]
                    read_question=mode != "hybrid_without_question_filters",
                )
                ranked = [hit.external_id for hit in hits if hit.kind == "item"]
                grades = qrels[question["qid"]]
                ndcg, recall = ndcg_at_k(ranked, grades), recall_at_k(ranked, grades)
                scores[mode]["ndcg"].append(ndcg)
                scores[mode]["recall"].append(recall)
                row[mode] = round(ndcg, 3)
            per_question.append(row)

    result = {
        "benchmark": "retrieval_eval",
        "questions": len(questions),
        **{
            mode: {
                "ndcg@10": round(sum(values["ndcg"]) / len(values["ndcg"]), 4),
                "recall@10": round(sum(values["recall"]) / len(values["recall"]), 4),
            }
            for mode, values in scores.items()
        },
        "import_seconds": round(import_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    if args.per_question:
        for row in per_question:
            print(json.dumps(row), file=sys.stderr)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
