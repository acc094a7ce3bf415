"""Feed sync time: a generated 100k-row Meta-feed CSV served by a loopback HTTP server, synced as a feed.

    .venv/bin/python bench/feed_sync.py [--rows 100000]

In a scratch database (bench/_scratch.py), with the feed server on 127.0.0.1 (private addresses allowed for
the run) and no embeddings (as bench/import_catalog.py: this measures the fetch and the import, not the model;
the bench clears the import's ``embed`` before running it):
1. first sync: fetch (``common.safe_fetch``, streamed to disk), hash, then the full-sync import of 100k rows;
2. the same feed again: the server answers 304 to the conditional GET, nothing is imported;
3. the feed with 1% of its prices changed (new ETag): fetch and a full-sync import that updates 1,000 rows.
Each run is ``catalogs.services.feeds.feed_sync`` then ``catalogs.services.imports.import_run`` (what the
``sync_feed`` and ``run_import`` tasks do, on one process). Prints one JSON line and writes
bench/results/feed_sync.json. Exit status 1 when a sync fails or the 304 run imports anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django
from import_catalog import generate

RESULTS = ROOT / "bench" / "results" / "feed_sync.json"


def changed_prices(text: str, every: int) -> str:
    """The feed with every ``every``-th item's price raised by one euro (a daily price update)."""
    lines = text.splitlines(keepends=True)
    for n in range(2, len(lines), every):
        sku, title, description, availability, condition, price, *rest = lines[n].split(",")
        amount, currency = price.split(" ")
        lines[n] = ",".join(
            [sku, title, description, availability, condition, f"{float(amount) + 1:.2f} {currency}", *rest]
        )
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    setup_django()
    from django.conf import settings
    from django.utils import timezone

    from businesses.models import Business
    from catalogs.models import FeedSource, Import
    from catalogs.services.feeds import feed_sync
    from catalogs.services.imports import import_run
    from tests.fixtures.feeds import FeedServer

    server = FeedServer()
    steps: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp, scratch_database("bench_feed_sync"):
        folder = Path(tmp)
        settings.MEDIA_ROOT = str(folder / "media")
        settings.SAFE_FETCH_ALLOW_PRIVATE = True  # the feed server is on loopback
        source = folder / "feed.csv"
        generate(source, args.rows)
        text = source.read_text(encoding="utf-8")
        file_mb = round(len(text.encode()) / 1e6, 1)
        business = Business.objects.create(name="bench feed", slug="bench-feed")
        feed = FeedSource.objects.create(
            business=business, url=server.url("/feed.csv"), next_run_at=timezone.now()
        )

        def sync(label: str) -> None:
            started = time.perf_counter()
            run = feed_sync(feed_id=feed.pk, enqueue=False)
            fetched = time.perf_counter()
            assert run is not None
            if run.import_id:
                # Embedding off, as in bench/import_catalog.py: 100k texts would measure the model.
                Import.objects.filter(pk=run.import_id).update(embed=False)
            imp = import_run(import_id=run.import_id) if run.import_id else None
            done = time.perf_counter()
            if imp is not None and imp.state != "succeeded":
                raise SystemExit(f"{label}: import {imp.state}: {imp.error_message}")
            steps[label] = {
                "outcome": run.outcome,
                "fetch_s": round(fetched - started, 2),
                "import_s": round(done - fetched, 2),
                "total_s": round(done - started, 2),
                "counts": imp.counts() if imp is not None else None,
            }

        server.serve("/feed.csv", text, etag='"v1"')
        sync("first_sync")
        sync("not_modified")
        server.serve("/feed.csv", changed_prices(text, 100), etag='"v2"')
        sync("one_percent_changed")
    server.close()

    result = {
        "bench": "feed_sync",
        "rows": args.rows,
        "file_mb": file_mb,
        **steps,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpus": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
    }
    result["ok"] = (
        steps["first_sync"]["outcome"] == "imported"
        and steps["not_modified"]["outcome"] == "not_modified"
        and steps["one_percent_changed"]["outcome"] == "imported"
    )
    line = json.dumps(result)
    print(line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(line + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
