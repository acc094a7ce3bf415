"""Size of the embeddable widget as browsers download it: raw and gzipped bytes of widget.js.

    .venv/bin/python bench/widget_size.py

Prints one JSON line and writes it to bench/results/widget_size.json. Exits 1 when the gzipped size is over
the budget (25 KB, issue 5), so that CI notices a regression. The gzip is the one /widget.js serves
(messaging.widget_views: level 9); brotli is not served.
"""

from __future__ import annotations

import gzip
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDGET = ROOT / "messaging" / "static" / "bizagent" / "widget.js"
BUDGET_GZIP_BYTES = 25 * 1024


def measure() -> dict[str, object]:
    body = WIDGET.read_bytes()
    gzipped = len(gzip.compress(body, compresslevel=9, mtime=0))
    return {
        "benchmark": "widget_size",
        "file": str(WIDGET.relative_to(ROOT)),
        "raw_bytes": len(body),
        "gzip_bytes": gzipped,
        "gzip_kib": round(gzipped / 1024, 2),
        "budget_gzip_bytes": BUDGET_GZIP_BYTES,
        "within_budget": gzipped < BUDGET_GZIP_BYTES,
        "python": platform.python_version(),
    }


def main() -> int:
    result = measure()
    line = json.dumps(result)
    print(line)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "widget_size.json").write_text(line + "\n")
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
