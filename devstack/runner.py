"""Run the whole stack in one terminal: embedded services, migrations, demo data, Celery workers and the
ASGI server. Logs are streamed with a prefix per process; a process that dies is started again
(devstack.supervisor); Ctrl-C or SIGTERM stops every child.

    python -m devstack            (``./dev start`` runs this inside the virtualenv)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import NoReturn

import httpx

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from devstack import paths, services
from devstack.supervisor import Supervisor, interrupt_on_stop_signals

COLOURS = {"asgi": "\033[36m", "worker": "\033[35m", "replies": "\033[33m", "stack": "\033[32m"}
RESET = "\033[0m"
_print_lock = threading.Lock()


def say(source: str, line: str) -> None:
    colour = COLOURS.get(source, "") if sys.stdout.isatty() else ""
    with _print_lock:
        print(f"{colour}{source:>6} |{RESET if colour else ''} {line}", flush=True)


def uvicorn_limits() -> list[str]:
    """uvicorn options every deployment needs (docs/security.md, "Chat socket"): the websocket frame limit
    (uvicorn reads up to 16 MiB otherwise before the application can refuse it), and no X-Forwarded-For
    rewriting of the client address (uvicorn trusts it from 127.0.0.1 by default: the chat's per-address
    limits read the header themselves, and only when TRUSTED_PROXY_HEADER says so)."""
    from django.conf import settings

    return ["--ws-max-size", str(settings.WS_MAX_MESSAGE_BYTES), "--no-proxy-headers"]


class Stack:
    def __init__(
        self, host: str, port: int, worker_concurrency: int, reply_processes: int, reply_threads: int
    ) -> None:
        self.host, self.port = host, port
        self.worker_concurrency = worker_concurrency
        self.reply_processes, self.reply_threads = reply_processes, reply_threads
        self.supervisor = Supervisor(say)
        self.stopping = threading.Event()

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        say("stack", "stopping…")
        self.supervisor.stop()
        services.release_all()
        say("stack", "stopped; nothing of ours is left running")

    def run(self) -> NoReturn:
        say(
            "stack", "starting PostgreSQL+pgvector and Redis (embedded unless DATABASE_URL/REDIS_URL are set)"
        )
        services.ensure_core_services()
        if not os.environ.get("LLAMA_POOL"):
            say(
                "stack",
                "starting the local llama.cpp server with SmolLM2-135M-Instruct (LLAMA_POOL is unset)",
            )
            services.ensure_llama()
            say("stack", f"llama.cpp server at {paths.embedded_llama_url()}")

        import django
        from django.core.management import call_command

        # Where the stack is reached, unless said otherwise: the demo business allows the widget on it (a
        # PORT other than 8000 would otherwise have its demo page's chat refused), and the children inherit it.
        os.environ.setdefault("PUBLIC_URL", f"http://{self.host}:{self.port}")
        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        say("stack", "database migrated")
        call_command("seed_demo")

        python = sys.executable
        # Replies spend their time waiting on the inference stream, so each reply worker runs many at once on
        # its event loop (common.aio), one process per core (their Python is on one GIL per process);
        # imports and embeddings are CPU-bound and get a worker of processes.
        no_beat: tuple[str, ...] = ()
        workers = [
            (f"replies{number}" if number else "replies", "replies", "threads", self.reply_threads, no_beat)
            for number in range(self.reply_processes)
        ]
        # The periodic tasks (settings.CELERY_BEAT_SCHEDULE) run from the ingest/outbound worker: one beat.
        beat = ("--beat", "--schedule", str(paths.data_dir() / "celerybeat-schedule"))
        for name, queues, pool, concurrency, extra in (
            *workers,
            ("worker", "ingest,outbound", "prefork", self.worker_concurrency, beat),
        ):
            self.supervisor.spawn(
                name,
                [
                    *(python, "-m", "celery", "-A", "config", "worker"),
                    *("-Q", queues, "--pool", pool, "--concurrency", str(concurrency), *extra),
                    *("--loglevel", "INFO", "--hostname", f"{name}-{os.getpid()}@%h"),
                ],
            )
        self.supervisor.spawn(
            "asgi",
            [
                python,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--ws",
                "websockets",
                "--lifespan",
                "off",
                "--no-access-log",
                *uvicorn_limits(),
            ],
        )
        base = f"http://{self.host}:{self.port}"
        self._wait_ready(base)
        from businesses.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG

        for line in (
            "",
            f"Business admin:  {base}/app/",
            f"Demo login:      {DEMO_EMAIL} / {DEMO_PASSWORD}",
            f"Demo shop page:  {base}/demo/{DEMO_SLUG}/",
            f"Service admin:   {base}/django-admin/",
            f"Readiness:       {base}/readyz",
            "Press Ctrl-C to stop everything.",
            "",
        ):
            say("stack", line)
        for service in services.supervised():
            self.supervisor.watch(service)
        self.supervisor.run()

    def _wait_ready(self, base: str) -> None:
        deadline = time.monotonic() + 90
        last = ""
        # With METRICS_TOKEN the answer names the check that is not green yet (without it: ok or not ok).
        token = os.environ.get("METRICS_TOKEN", "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{base}/readyz", timeout=3, headers=headers)
                if response.status_code == 200:
                    say("stack", "ready: every /readyz check is green")
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(1)
        say("stack", f"not ready after 90 s: {last}")


def main() -> int:
    stack = Stack(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        worker_concurrency=int(os.environ.get("WORKER_CONCURRENCY", "2")),
        reply_processes=max(1, int(os.environ.get("REPLY_WORKER_PROCESSES", str(os.cpu_count() or 1)))),
        reply_threads=int(os.environ.get("REPLY_WORKER_THREADS", "32")),
    )

    # Unwind whatever is running (even a service still starting); `finally` stops everything.
    interrupt_on_stop_signals()
    try:
        stack.run()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
