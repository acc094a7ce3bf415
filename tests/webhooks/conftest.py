"""Fixtures of the webhook tests: a loopback receiver (a real HTTP server thread) and endpoints on it.

``receiver``: records every POST (headers, raw body, when it arrived) and answers 200, unless scripted:
``.answer(500, times=2)`` queues error answers, ``.stall(seconds, times=1)`` answers only after ``seconds``
(past a shorter OUTBOUND_WEBHOOK_TIMEOUT: a read timeout). Settings: the timeout is short, private targets
(loopback) and plain http are allowed, and retries start at one second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: list[tuple[int, float]] = []  # (status, delay before answering)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, delay = receiver._next(Received(self.path, dict(self.headers), body, time.time()))
                time.sleep(delay)
                answer = b'{"ok": true}' if status < 300 else b"receiver says no"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client timed out and closed the connection

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _next(self, request: Received) -> tuple[int, float]:
        with self._lock:
            self.received.append(request)
            return self._script.pop(0) if self._script else (200, 0.0)

    def answer(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._script += [(status, 0.0)] * times

    def stall(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._script += [(200, seconds)] * times

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    settings.OUTBOUND_WEBHOOK_TIMEOUT = 0.5
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.OUTBOUND_WEBHOOK_ALLOW_HTTP = True
    settings.OUTBOUND_WEBHOOK_RETRY_FIRST_SECONDS = 1.0
    settings.OUTBOUND_WEBHOOK_RETRY_MAX_SECONDS = 3600.0
    settings.OUTBOUND_WEBHOOK_RETRY_WINDOW_SECONDS = 86400.0
    settings.OUTBOUND_WEBHOOK_DISABLE_AFTER_ABANDONED = 3
    server = Receiver()
    yield server
    server.stop()
