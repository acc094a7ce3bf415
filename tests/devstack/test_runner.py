"""The README's first command: the whole stack comes up ready, survives a killed worker and a killed Redis,
and Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from config.settings import BASE_DIR
from devstack.handles import free_port
from tests.devstack.test_services import wait_dead
from tests.inference_server import InferenceServer


def wait_for_line(lines: list[str], line: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    # The runner right-aligns the prefixes: " stack | ...".
    while line not in (said.strip() for said in lines):
        assert time.monotonic() < deadline, "\n".join(lines[-40:])
        time.sleep(0.1)


def test_stack_starts_ready_survives_crashes_and_stops_every_process_on_ctrl_c(
    tmp_path: Path, inference_server: InferenceServer
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "BIZAGENT_REDIS_DB"}}
    env.update(
        BIZAGENT_DATA_DIR=str(tmp_path),
        LLAMA_POOL=inference_server.url,
        LLAMA_MODEL=inference_server.model,
        PORT=str(port),
        WORKER_CONCURRENCY="1",
        REPLY_WORKER_PROCESSES="2",
        METRICS_TOKEN="stack-test-token",
    )
    stack = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert stack.stdout is not None
        for line in stack.stdout:
            lines.append(line.rstrip())
            if "Press Ctrl-C to stop everything." in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(240), "\n".join(lines[-40:])
        output = "\n".join(lines)
        base = f"http://127.0.0.1:{port}"
        assert "ready: every /readyz check is green" in output
        assert f"Business admin:  {base}/app/" in output
        assert "Demo login:      demo@bizagent.local / demo-password-123" in output
        assert f"Demo shop page:  {base}/demo/trailhead-outfitters/" in output
        assert any(line.startswith("worker |") for line in lines), "worker logs are streamed with a prefix"
        assert any(line.startswith("replies1 |") for line in lines), "one reply worker process per core"
        assert any("beat: Starting" in line for line in lines), "the periodic tasks are scheduled"

        # The details are for the operator's token only (docs/security.md, "Disclosure").
        readiness = httpx.get(
            f"{base}/readyz", timeout=10, headers={"Authorization": "Bearer stack-test-token"}
        )
        assert readiness.status_code == 200, readiness.text
        assert {name: check["ok"] for name, check in readiness.json()["checks"].items()} == {
            "database": True,
            "redis": True,
            "worker": True,
            "inference": True,
        }
        assert httpx.get(f"{base}/demo/trailhead-outfitters/", timeout=10).status_code == 200

        # A reply worker and the embedded Redis killed: both come back, and so does readiness.
        worker = next(
            child
            for child in psutil.Process(stack.pid).children()
            if any(arg.startswith("replies1-") for arg in child.cmdline())
        )
        worker.kill()
        os.kill(int((tmp_path / "redis" / "server.pid").read_text()), signal.SIGKILL)
        wait_for_line(lines, "stack | replies1 restarted")
        wait_for_line(lines, "stack | redis restarted")
        said = [line.strip() for line in lines]
        assert "stack | replies1 exited with code -9; restarting it in 1 s" in said
        assert "stack | redis exited with code -9; restarting it in 1 s" in said
        assert stack.poll() is None
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "/readyz did not turn green again"
            time.sleep(1)

        ours = [child.pid for child in psutil.Process(stack.pid).children(recursive=True)]
        ours.append(int((tmp_path / "redis" / "server.pid").read_text()))
        ours.append(int((tmp_path / "pg" / "postmaster.pid").read_text().splitlines()[0]))
        assert len(ours) >= 4  # worker (+ its pool), ASGI server, Redis, PostgreSQL
        names = {pid: " ".join(psutil.Process(pid).cmdline()[:4]) for pid in ours}

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0
        time.sleep(0.2)
        assert "stopped; nothing of ours is left running" in "\n".join(lines)
        left = [pid for pid in ours if not wait_dead(pid, 15)]
        assert left == [], f"still running after Ctrl-C: {[names.get(pid) for pid in left]}"
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
