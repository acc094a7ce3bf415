"""Ingest memory: peak RSS of one import of a hostile or large file, each in its own process.

    .venv/bin/python bench/ingest_memory.py [--xlsx-gb 2] [--json-mb 200] [--keep DIR]

Generates, in a temporary folder:

- ``bomb.xlsx``: about 10 MB on disk, its ``xl/sharedStrings.xml`` inflating to ``--xlsx-gb`` GB of unique
  strings that compress about 200x (under the old per-member ratio check, within the old 2 GiB total);
- ``feed.json``: a ``{"products": [...]}`` feed of ``--json-mb`` MB (product objects of about 1 KB);
- ``huge-string.json``: a valid product, then one whose description is a 50 MB string;
- ``deep.json``: a product whose attributes nest 100,000 arrays deep.

Each is imported (``catalogs.services.imports.import_file``, no embeddings) into a scratch database by a fresh
Python process, which reports its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), its RSS before
the import (Django loaded, connected), the import's state and message, and the seconds taken. Budget: peak
under 300 MB each. Prints one JSON line and writes bench/results/ingest_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scratch import ROOT, scratch_database, setup_django

RESULTS = ROOT / "bench" / "results" / "ingest_memory.json"
DB_NAME = "bench_ingest_memory"
BUDGET_MB = 300
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, os.path.join(os.environ["BENCH_ROOT"], "bench"))
from _scratch import setup_django
setup_django()
from django.db import connection
connection.settings_dict["NAME"] = os.environ["BENCH_DB"]
from pathlib import Path
from businesses.models import Business
from catalogs.services.imports import import_file
slug = "bench-" + os.urandom(4).hex()
business = Business.objects.create(name=slug, slug=slug)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
imp = import_file(business=business, path=Path(sys.argv[1]), mode="upsert", embed=False)
seconds = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "state": imp.state, "error": imp.error_message, "created": imp.created_count, "failed": imp.failed_count,
    "seconds": round(seconds, 1), "rss_before_mb": round(before / 1024, 1), "peak_rss_mb": round(peak / 1024, 1),
}))
"""


def write_bomb_xlsx(path: Path, inflated_bytes: int) -> int:
    """A workbook whose shared strings inflate to ``inflated_bytes``, streamed into the zip (nothing big in
    memory). Each string is 2,400 repeated characters and 16 random hex digits: about 190x compression."""
    members = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{RELS}"><Relationship Id="rId1" Type="{DOC_RELS}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{MAIN}" xmlns:r="{DOC_RELS}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{RELS}">'
            f'<Relationship Id="rId1" Type="{DOC_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{DOC_RELS}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": (
            f'<worksheet xmlns="{MAIN}"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c>'
            '<c r="B1" t="s"><v>1</v></c></row></sheetData></worksheet>'
        ),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
        written = 0
        with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as out:
            out.write(f'<sst xmlns="{MAIN}"><si><t>id</t></si><si><t>title</t></si>'.encode())
            filler = "x" * 2400
            while written < inflated_bytes:
                block = "".join(
                    f"<si><t>{filler}{os.urandom(8).hex()}</t></si>" for _ in range(1000)
                ).encode()
                out.write(block)
                written += len(block)
            out.write(b"</sst>")
    return written


def write_json_feed(path: Path, size_bytes: int) -> int:
    words = [
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
    ]
    count = 0
    with path.open("w", encoding="utf-8") as out:
        out.write('{"feed": {"version": 2, "generated": "2026-12-01"}, "products": [')
        while out.tell() < size_bytes:
            description = " ".join(words[(count + i) % len(words)] for i in range(110))
            product = {
                "id": f"SKU-{count:08d}",
                "title": f"Trail product {count}",
                "description": description,
                "price": {"amount": f"{10 + count % 500}.99", "currency": "EUR"},
                "availability": "in stock" if count % 7 else "out of stock",
                "brand": "Ridgeline",
                "link": f"https://shop.example/p/{count}",
                "attributes": {"color": "green", "size": str(36 + count % 12)},
            }
            out.write(("," if count else "") + json.dumps(product))
            count += 1
        out.write("]}")
    return count


def write_huge_string_json(path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write('[{"id": "OK-1", "title": "Fine"}, {"id": "BIG", "title": "Big", "description": "')
        for _ in range(50):
            out.write("y" * (1024 * 1024))
        out.write('"}]')


def write_deep_json(path: Path) -> None:
    path.write_text('[{"id": "A", "title": "x", "attributes": ' + "[" * 100_000 + "]" * 100_000 + "}]")


def run_child(path: Path) -> dict[str, object]:
    env = {**os.environ, "BENCH_ROOT": str(ROOT), "BENCH_DB": DB_NAME}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return {"state": "crashed", "error": result.stderr[-2000:]}
    run = dict(json.loads(result.stdout.strip().splitlines()[-1]))
    run["error"] = str(run["error"])[:300]
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--xlsx-gb", type=float, default=2.0)
    parser.add_argument("--json-mb", type=float, default=200.0)
    parser.add_argument("--keep", type=Path, help="generate the files here and keep them")
    args = parser.parse_args()
    setup_django()
    folder_context = tempfile.TemporaryDirectory(prefix="ingest-memory-")
    folder = args.keep or Path(folder_context.name)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, object]] = {}
    started = time.monotonic()
    bomb = folder / "bomb.xlsx"
    inflated = write_bomb_xlsx(bomb, int(args.xlsx_gb * 1e9))
    files["bomb.xlsx"] = {"bytes": bomb.stat().st_size, "inflates_to": inflated}
    feed = folder / "feed.json"
    products = write_json_feed(feed, int(args.json_mb * 1e6))
    files["feed.json"] = {"bytes": feed.stat().st_size, "products": products}
    write_huge_string_json(folder / "huge-string.json")
    files["huge-string.json"] = {"bytes": (folder / "huge-string.json").stat().st_size}
    write_deep_json(folder / "deep.json")
    files["deep.json"] = {"bytes": (folder / "deep.json").stat().st_size}
    generate_seconds = round(time.monotonic() - started, 1)
    runs: dict[str, dict[str, object]] = {}
    with scratch_database(DB_NAME):
        for name in files:
            runs[name] = {**files[name], **run_child(folder / name)}
            print(name, json.dumps(runs[name]), file=sys.stderr)
    if args.keep is None:
        folder_context.cleanup()
    over = [name for name, run in runs.items() if float(str(run.get("peak_rss_mb", "inf"))) > BUDGET_MB]
    summary = {
        "bench": "ingest_memory",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "generate_seconds": generate_seconds,
        "budget_peak_rss_mb": BUDGET_MB,
        "runs": runs,
        "over_budget": over,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
