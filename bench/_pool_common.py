"""Shared by the inference-pool benchmarks: Django setup, test servers as subprocesses, percentiles."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def setup_django(**settings_env: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")  # settings default to production, which needs real secrets
    os.environ.setdefault("BIZAGENT_REDIS_DB", "13")
    os.environ.update(settings_env)
    import django

    from devstack import services

    services.ensure_core_services()
    django.setup()
    # The usage row is written after the stream ends; the benchmark database may not be migrated.
    logging.getLogger("inference.accounting").setLevel(logging.CRITICAL)


def start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.inference_server", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("ready "):
        raise RuntimeError(f"test server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def write(name: str, result: dict[str, object]) -> None:
    result = {
        "bench": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu, python {platform.python_version()}",
        **result,
    }
    line = json.dumps(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(line + "\n")
    print(line)
