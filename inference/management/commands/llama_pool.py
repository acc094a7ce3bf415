"""``manage.py llama_pool status|probe|chat|reset``: look at the inference pool and try it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference import state
from inference.chat import stream_chat
from inference.health import pool_status, probe_pool
from inference.transport import close_clients
from inference.types import ChatRequest, InferenceError, StreamEnd, TextDelta, ToolCalls, Usage


class Command(BaseCommand):
    help = "Inference pool: status (probes every endpoint), probe, chat TEXT, reset (clear routing state)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        status = sub.add_parser("status", help="each endpoint: health and why, in flight, circuit, model")
        status.add_argument("--no-probe", action="store_true", help="show the stored state without probing")
        sub.add_parser("probe", help="probe every endpoint now (for cron or Celery beat)")
        chat = sub.add_parser("chat", help="stream a completion through the real routing")
        chat.add_argument("text")
        chat.add_argument("--business", help="business slug (its caps and budget apply)")
        chat.add_argument("--system", default="You are a helpful assistant. Answer briefly.")
        chat.add_argument("--max-tokens", type=int, default=256)
        chat.add_argument("--affinity-key", default=None)
        sub.add_parser("reset", help="clear in-flight counts, circuits and health in Redis")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "status":
            self._status(probe=not options["no_probe"])
        elif action == "probe":
            for result in probe_pool():
                self.stdout.write(
                    f"{result.endpoint}  {'ok' if result.ok else 'FAIL'}  {result.reason}  ({result.latency_ms:.0f} ms)"
                )
        elif action == "chat":
            self._chat(options)
        elif action == "reset":
            state.reset()
            self.stdout.write("pool state cleared")

    def _status(self, *, probe: bool) -> None:
        if probe:
            probe_pool()
        rows = pool_status()
        if not rows:
            raise CommandError(
                "no inference endpoint configured (LLAMA_POOL is empty and the embedded server is not running)"
            )
        for row in rows:
            health = {None: "not probed", True: "healthy"}.get(row.healthy, "UNHEALTHY")
            circuit = row.circuit
            if row.circuit != "closed":
                until = dt.datetime.fromtimestamp(row.open_until, tz=dt.UTC).strftime("%H:%M:%S")
                circuit += f" until {until} UTC ({row.circuit_reason})"
            elif row.circuit_failures:
                circuit += f" ({row.circuit_failures} recent failure(s): {row.circuit_reason})"
            self.stdout.write(f"{row.url}  [{row.source}, {row.kind}, weight {row.weight}]")
            self.stdout.write(
                f"  health:    {health}" + (f" - {row.health_reason}" if row.healthy is False else "")
            )
            self.stdout.write(f"  in flight: {row.inflight}/{row.max_concurrency}")
            self.stdout.write(f"  circuit:   {circuit}")
            served = ", ".join(row.served_models) or "?"
            self.stdout.write(f"  model:     {row.model} (serves: {served})")

    def _chat(self, options: dict[str, Any]) -> None:
        business_id = 0
        if options["business"]:
            from businesses.models import Business

            business = Business.objects.filter(slug=options["business"]).first()
            if business is None:
                raise CommandError(f"no business with slug {options['business']!r}")
            business_id = business.pk
        request = ChatRequest(
            business_id=business_id,
            messages=[
                {"role": "system", "content": options["system"]},
                {"role": "user", "content": options["text"]},
            ],
            max_tokens=options["max_tokens"],
            affinity_key=options["affinity_key"],
        )
        try:
            asyncio.run(self._stream(request))
        except InferenceError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc

    async def _stream(self, request: ChatRequest) -> None:
        usage: Usage | None = None
        try:
            async with contextlib.aclosing(stream_chat(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        self.stdout.write(event.text, ending="")
                        sys.stdout.flush()
                    elif isinstance(event, ToolCalls):
                        for call in event.calls:
                            self.stdout.write(f"\n[tool call {call.name}({call.arguments_text})]", ending="")
                    elif isinstance(event, Usage):
                        usage = event
                    elif isinstance(event, StreamEnd):
                        ttft = f"{event.first_token_ms:.0f} ms" if event.first_token_ms is not None else "-"
                        tokens = (
                            f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
                            if usage
                            else "not reported"
                        )
                        self.stdout.write("")
                        self.stdout.write(
                            f"-- endpoint {event.endpoint}, first token {ttft}, total {event.total_ms:.0f} ms, "
                            f"tokens {tokens}, finish {event.finish_reason}"
                        )
        finally:
            await close_clients()
