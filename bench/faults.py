"""Faults under load: every customer message gets exactly one final reply while processes and servers die.

    .venv/bin/python bench/faults.py [--minutes 4] [--quick] [--keep]

The real stack on services of its own: an embedded PostgreSQL+pgvector and Redis in a scratch data folder
(``BIZAGENT_DATA_DIR``, a temporary folder, for this process and every child; the development and test
servers under .data/ are never touched), two test inference server processes as ``LLAMA_POOL``, the Graph
API stand-in (tests/fixtures/meta.py) in this process, and as the dev runner starts them (devstack.runner),
under its supervisor (devstack.supervisor: a dead process comes back after 1 s, then 2, 4...): uvicorn, two
``replies`` workers on the threads pool, and the ``ingest,outbound`` worker (prefork) with celery beat
(the sweepers every ``REPLY_SWEEP_SECONDS``=2 / ``WEBHOOK_SWEEP_SECONDS``=5 s here; every other setting is
its default, DEBUG off).

Load, all along: widget conversations (websocket clients: a message, its reply, the next one; a dropped
socket reconnects and resends with the same ``client_id``, as the widget does) and signed WhatsApp webhook
deliveries, each from a new customer (one a second; a delivery not answered 200 is posted again, as Meta
does). Faults, one after the other, spaced evenly:

1. a ``replies`` worker SIGKILLed while it streams a reply (the process named by the reply's claim);
2. the ``ingest,outbound`` worker SIGKILLed (its process group) while a Graph send is on the wire (the
   stand-in took it and holds the answer);
3. Redis SIGKILLed (the supervisor starts it again from its append-only file);
4. PostgreSQL's postmaster SIGKILLed (the supervisor starts it again);
5. one inference endpoint SIGKILLed and the other stalled (no token) for 10 s, then both back.

Then, once the load has stopped and the stack has drained, every customer message is checked: exactly one
reply, final (``done``, or ``failed`` with text), none left ``streaming``; every accepted webhook delivery
became a customer message; every WhatsApp reply reached the stand-in once (or is ``ambiguous``: taken by
Meta while its worker died, reported and never resent), no Graph send twice.

A fault's recovery time: from its injection until every customer message sent before the fault ended (the
process or server back, the endpoints back) has its final reply (for WhatsApp: the reply sent to the Graph
stand-in). Prints a table and the tally; writes bench/results/faults.json. Exit status 0 when nothing was
lost, doubled or stuck and every recovery took under 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "faults.json"
ORIGIN = "https://shop.example"
RECOVERY_BUDGET = 30.0
# The model's words after the catalog's answer: about 4 s of streaming at the token delay below, so that a
# reply is caught mid-stream.
MODEL_WORDS = " ".join(["Camping is more fun with good gear."] * 16)
TOKEN_DELAY = 0.03
WIDGET_CONVERSATIONS = 4
WIDGET_TURNS = 6  # then the conversation ends and a new visitor starts one
WEBHOOKS_PER_SECOND = 1.0
QUESTIONS = [
    "tell me everything about the Ridgeline tent",
    "tell me everything about the pocket gas stove",
    "tell me about the Alpine down sleeping bag",
]
INFERENCE_OUTAGE = 10.0  # seconds endpoint A is down and endpoint B stalled


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def now() -> float:
    return time.time()


# --- The stack ----------------------------------------------------------------------------------------------


class Logs:
    """Each child's output in <data>/logs/<name>.log; the supervisor's own lines in supervisor.log."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()

    def say(self, source: str, line: str) -> None:
        with self._lock:
            if source not in self._files:
                self._files[source] = open(self.folder / f"{source}.log", "a")  # noqa: SIM115
            stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
            self._files[source].write(f"{stamp} {line}\n")
            self._files[source].flush()

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()


class InferenceEndpoint:
    """A test inference server process on a fixed port (a killed one comes back on the same URL)."""

    def __init__(self, name: str, logs: Logs) -> None:
        self.name, self.logs = name, logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.inference_server", "--port", str(self.port)),
                *("--reply", MODEL_WORDS, "--token-delay", str(TOKEN_DELAY)),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"inference server {self.name} did not start: {line}")
        self.logs.say("stack", f"{self.name} at {self.url}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def control(self, body: dict[str, Any]) -> None:
        import httpx

        httpx.post(f"{self.url}/_control", json=body, timeout=5).raise_for_status()


class Stack:
    def __init__(self, data: Path, logs: Logs) -> None:
        from tests.fixtures.meta import GraphStandIn

        self.data, self.logs = data, logs
        self.endpoints = [InferenceEndpoint("llm-a", logs), InferenceEndpoint("llm-b", logs)]
        self.graph = GraphStandIn().start()
        self.sends_at: list[tuple[float, str]] = []  # (time, recipient) of each Graph message send
        self.port = free_port()
        self.supervisor: Any = None
        self._stop = threading.Event()
        self.children: dict[str, Any] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What every child gets (and this process, before Django loads its settings)."""
        from tests.fixtures.meta import APP_SECRET

        return {
            "BIZAGENT_DATA_DIR": str(self.data),
            "BIZAGENT_REDIS_DB": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "LLAMA_POOL": ",".join(e.url for e in self.endpoints),
            "LLAMA_MODEL": "test-model",
            "EMBEDDINGS_BACKEND": "local",
            "AGENT_MODEL_SENTENCES": "50",
            "AGENT_MODEL_TOKENS": "400",
            "META_GRAPH_URL": self.graph.url,
            "META_APP_SECRET": APP_SECRET,
            "REPLY_BURST_WAIT_SECONDS": "0.5",
            "REPLY_SWEEP_SECONDS": "2",
            # Graph traffic is message sends only: the send held on the wire (fault 2) is a reply's.
            "META_MARK_READ": "0",
            "WEBHOOK_SWEEP_SECONDS": "5",
            "SEND_SWEEP_SECONDS": "2",
            # One client address for every visitor and delivery: the per-address limits would refuse the load.
            "CHAT_VISITOR_MESSAGES_PER_MINUTE": "1000",
            "CHAT_ADDRESS_MESSAGES_PER_MINUTE": "100000",
            "CHAT_ADDRESS_NEW_VISITORS_PER_MINUTE": "100000",
            "CHAT_ADDRESS_MAX_CONNECTIONS": "1000",
            "CHAT_BUSINESS_MESSAGES_PER_MINUTE": "100000",
            "LLAMA_BUSINESS_MAX_CONCURRENCY": "1000",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "FIELD_ENCRYPTION_KEY": __import__("base64").urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "SECURE_SSL_REDIRECT": "0",
            "LOG_LEVEL": "INFO",
        }

    def start_services(self) -> None:
        for endpoint in self.endpoints:
            endpoint.start()
        os.environ.update(self.environment())
        for name in ("DATABASE_URL", "REDIS_URL"):
            os.environ.pop(name, None)
        from devstack import services

        services.ensure_core_services()
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)

    def start_processes(self) -> None:
        from devstack import services
        from devstack.runner import uvicorn_limits
        from devstack.supervisor import Supervisor

        self.supervisor = Supervisor(self.logs.say)
        python = sys.executable
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        beat = ("--beat", "--schedule", str(self.data / "celerybeat-schedule"))
        for name, queues, pool, concurrency, extra in (
            ("replies", "replies", "threads", 32, ()),
            ("replies1", "replies", "threads", 32, ()),
            ("worker", "ingest,outbound", "prefork", 2, beat),
        ):
            self.children[name] = self.supervisor.spawn(
                name,
                [
                    *(python, "-m", "celery", "-A", "config", "worker"),
                    *("-Q", queues, "--pool", pool, "--concurrency", str(concurrency), *extra),
                    *("--loglevel", "INFO", "--hostname", f"{name}-{os.getpid()}@%h"),
                ],
                env,
            )
        self.children["asgi"] = self.supervisor.spawn(
            "asgi",
            [
                *(python, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"),
                *("--port", str(self.port), "--ws", "websockets", "--lifespan", "off", "--no-access-log"),
                *uvicorn_limits(),
            ],
            env,
        )
        for service in services.supervised():
            self.supervisor.watch(service)
        threading.Thread(target=self._supervise, daemon=True).start()
        self._wait_ready()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self.supervisor.check()
            time.sleep(0.5)

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/readyz", timeout=3).status_code == 200:
                    ready = [
                        name
                        for name in ("replies", "replies1", "worker")
                        if "ready." in (self.logs.folder / f"{name}.log").read_text(errors="replace")
                    ]
                    if len(ready) == 3:
                        return
            time.sleep(0.5)
        raise RuntimeError(f"the stack did not become ready; logs in {self.logs.folder}")

    def stop(self) -> None:
        self._stop.set()
        if self.supervisor is not None:
            self.supervisor.stop()
        for endpoint in self.endpoints:
            endpoint.kill()
        self.graph.stop()
        from devstack import services

        services.release_all()


# --- The load -----------------------------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str  # widget / whatsapp
    key: str  # client_id or wamid
    first_sent: float
    acked: float | None = None  # message.created / HTTP 200
    message_id: int | None = None
    tries: int = 0


@dataclass
class Load:
    widget_url: str
    webhook_url: str
    sent: list[Sent] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    errors: Counter[str] = field(default_factory=Counter)

    async def run(self, seconds: float) -> None:
        tasks = [asyncio.ensure_future(self.widget(n)) for n in range(WIDGET_CONVERSATIONS)]
        tasks.append(asyncio.ensure_future(self.webhooks()))
        await asyncio.sleep(seconds)
        self.stop.set()
        # A message already sent is seen through to its acknowledgement (resent until then).
        await asyncio.wait(tasks, timeout=120)
        for task in tasks:
            task.cancel()

    async def widget(self, lane: int) -> None:
        """One visitor after another: a message, its reply, the next message. Until a message is acknowledged
        (``message.created``) it is resent with the same client_id over a new socket after any error, as the
        widget does; once acknowledged, a socket lost before its reply ends the conversation (the next
        message starts a new one: two unanswered messages in one conversation would get one reply)."""
        from websockets.asyncio.client import connect

        token: str | None = None
        conversation: int | None = None
        turn = 0
        for visit in itertools.count():
            if self.stop.is_set():
                return
            if turn >= WIDGET_TURNS:
                token, conversation, turn = None, None, 0
            record = Sent("widget", f"w{lane}-{visit}-{secrets.token_hex(3)}", now())
            self.sent.append(record)
            turn += 1
            while True:
                record.tries += 1
                try:
                    async with connect(self.widget_url, origin=ORIGIN, open_timeout=5) as ws:  # type: ignore[arg-type]
                        hello = {"type": "hello", "visitor_token": token, "conversation_id": conversation}
                        await ws.send(json.dumps(hello))
                        token = (await self._frame(ws, "ready", 10))["visitor_token"]
                        text = self.question(turn)
                        await ws.send(json.dumps({"type": "message", "client_id": record.key, "text": text}))
                        created = await self._frame(ws, "message.created", 10, client_id=record.key)
                        record.acked = now()
                        record.message_id = created["message"]["id"]
                        conversation = created["message"]["conversation_id"]
                        await self._frame(ws, "message.done", 40)
                    break
                except Exception as exc:  # a dropped socket, a timeout, a refused connection
                    self.errors[f"widget {type(exc).__name__}"] += 1
                    if record.acked is not None:
                        token, conversation, turn = None, None, 0
                        break
                    await asyncio.sleep(1)
            await asyncio.sleep(0.5)

    @staticmethod
    def question(turn: int) -> str:
        # Open questions: the model adds its sentences to the catalog's answer (a price or stock question is
        # answered from the data alone, with nothing to stream).
        return QUESTIONS[turn % len(QUESTIONS)]

    @staticmethod
    async def _frame(ws: Any, kind: str, timeout: float, client_id: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            frame: dict[str, Any] = json.loads(raw)
            if frame["type"] == "error":
                raise RuntimeError(f"error frame: {frame}")
            if frame["type"] == kind and (not client_id or frame["message"].get("client_id") == client_id):
                return frame

    async def webhooks(self) -> None:
        tasks = []
        for n in itertools.count():
            if self.stop.is_set():
                break
            tasks.append(asyncio.ensure_future(self.delivery(n)))
            await asyncio.sleep(1 / WEBHOOKS_PER_SECOND)
        await asyncio.gather(*tasks)

    async def delivery(self, n: int) -> None:
        import httpx

        from tests.fixtures.meta import signed, wa_change, wa_delivery, wa_text

        wamid = f"wamid.faults.{n:06d}.{secrets.token_hex(6)}"
        sender = f"1555{n:07d}"
        body, signature = signed(
            wa_delivery(
                wa_change(
                    "106540352242922",
                    messages=[
                        wa_text(
                            QUESTIONS[n % len(QUESTIONS)], wamid=wamid, sender=sender, timestamp=int(now())
                        )
                    ],
                )
            )
        )
        record = Sent("whatsapp", wamid, now())
        self.sent.append(record)
        async with httpx.AsyncClient(timeout=10) as client:
            while record.acked is None:
                record.tries += 1
                try:
                    response = await client.post(
                        self.webhook_url,
                        content=body,
                        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
                    )
                    if response.status_code == 200:
                        record.acked = now()
                        return
                    self.errors[f"webhook HTTP {response.status_code}"] += 1
                except httpx.HTTPError as exc:
                    self.errors[f"webhook {type(exc).__name__}"] += 1
                await asyncio.sleep(1)  # Meta retries a delivery that was not answered 200


# --- The faults ---------------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    injected_at: float = 0.0
    ended_at: float = 0.0  # when the fault was over: the process or server back, the endpoints back
    settled_at: float = 0.0  # when what the fault left behind reached its final state (an unconfirmed send)
    detail: str = ""


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except Exception:  # the database restarting under a probe: look again
            from django.db import connection

            connection.close()
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _pid_alive(pid: int) -> bool:
    from devstack.paths import pid_alive

    return pid_alive(pid)


def _restarted(child: Any, pid: int) -> bool:
    """The supervisor has started the child again (and it has not died since)."""
    return bool(child.proc.pid != pid and child.proc.poll() is None)


def kill_reply_worker(stack: Stack, fault: Fault) -> None:
    from messaging.models import Message

    def streaming() -> tuple[int, int] | None:
        reply = (
            Message.objects.filter(role=Message.Role.AGENT, status=Message.Status.STREAMING)
            .exclude(text="")
            .select_related("reply_to")
            .order_by("-pk")
            .first()
        )
        if reply is None or reply.reply_to is None or not reply.reply_to.claimed_by:
            return None
        return int(reply.reply_to.claimed_by.split(":")[1]), reply.pk

    pid, reply_id = _wait_for(streaming, 30, "a reply streaming")
    child = next(c for c in stack.children.values() if c.proc is not None and c.proc.pid == pid)
    os.kill(pid, signal.SIGKILL)
    fault.injected_at = now()
    fault.detail = f"{child.name} (pid {pid}) streaming reply {reply_id}"
    _wait_for(lambda: _restarted(child, pid), 60, f"{child.name} to come back")
    fault.ended_at = now()


def kill_outbound_worker(stack: Stack, fault: Fault) -> None:
    child = stack.children["worker"]
    seen = len(stack.graph.sends())
    # The next send is taken by the stand-in and answered only after 60 s: the worker dies with it on the wire.
    stack.graph.accept_then_time_out(60)
    _wait_for(lambda: len(stack.graph.sends()) > seen and not stack.graph._stalls, 30, "a send on the wire")
    time.sleep(0.2)
    pid = child.proc.pid
    os.killpg(pid, signal.SIGKILL)
    fault.injected_at = now()
    to = str(stack.graph.sends()[-1].body.get("to"))
    fault.detail = f"worker group (pid {pid}) while it sent to {to}"
    _wait_for(lambda: _restarted(child, pid), 60, "the worker to come back")
    fault.ended_at = now()
    # The send on the wire may have reached the customer: its reply must end Unconfirmed, never be resent.
    from messaging.models import Message

    _wait_for(
        lambda: Message.objects.filter(
            role=Message.Role.AGENT,
            conversation__contact__external_id=to,
            delivery=Message.Delivery.AMBIGUOUS,
        ).exists(),
        90,
        "the send on the wire to end Unconfirmed",
    )
    fault.settled_at = now()
    fault.detail += f"; its reply Unconfirmed after {fault.settled_at - fault.injected_at:.1f} s"


def restart_redis(stack: Stack, fault: Fault) -> None:
    from devstack import services

    service = services._redis
    pid = service.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    fault.injected_at = now()
    fault.detail = f"redis-server (pid {pid}) SIGKILLed, started again by the supervisor"
    _wait_for(lambda: service.pid() not in (None, pid) and service.is_running(), 60, "Redis to come back")
    fault.ended_at = now()


def restart_postgres(stack: Stack, fault: Fault) -> None:
    from devstack import paths

    def postmaster() -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((paths.postgres_dir() / "postmaster.pid").read_text().splitlines()[0])
            return pid if _pid_alive(pid) else None
        return None

    pid = postmaster()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    fault.injected_at = now()
    fault.detail = f"postmaster (pid {pid}) SIGKILLed, started again by the supervisor"

    def back() -> bool:
        from django.db import connection

        new = postmaster()
        if new in (None, pid):
            return False
        connection.close()
        connection.ensure_connection()
        return True

    _wait_for(back, 90, "PostgreSQL to come back")
    fault.ended_at = now()


def inference_outage(stack: Stack, fault: Fault) -> None:
    dead, stalled = stack.endpoints
    dead.kill()
    stalled.control({"fault": {"kind": "hang"}})
    fault.injected_at = now()
    fault.detail = f"{dead.name} SIGKILLed, {stalled.name} stalled (no token), for {INFERENCE_OUTAGE:g} s"
    time.sleep(INFERENCE_OUTAGE)
    dead.start()
    stalled.control({"clear_faults": True})
    fault.ended_at = now()


FAULTS: list[tuple[str, Callable[[Stack, Fault], None]]] = [
    ("replies worker SIGKILL mid-stream", kill_reply_worker),
    ("outbound worker SIGKILL mid-send", kill_outbound_worker),
    ("Redis restart (SIGKILL)", restart_redis),
    ("PostgreSQL restart (SIGKILL)", restart_postgres),
    ("inference: one killed, one stalled", inference_outage),
]


# --- The check ----------------------------------------------------------------------------------------------


def drain(stack: Stack, timeout: float) -> float:
    """Wait until nothing is left to do (every reply final, every WhatsApp reply's delivery final, every
    delivery processed); returns the seconds waited."""
    from django.db import connection

    from messaging.models import Message, WebhookDelivery

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            busy = (
                Message.objects.filter(role=Message.Role.CUSTOMER, status=Message.Status.RECEIVED).exists()
                or Message.objects.filter(role=Message.Role.AGENT, status=Message.Status.STREAMING).exists()
                or Message.objects.filter(
                    role=Message.Role.AGENT, channel="whatsapp", delivery__in=["", Message.Delivery.QUEUED]
                ).exists()
                or WebhookDelivery.objects.exclude(state=WebhookDelivery.State.DONE).exists()
            )
        except Exception:
            connection.close()
            busy = True
        if not busy:
            break
        time.sleep(1)
    return time.monotonic() - started


def tally(stack: Stack, load: Load) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """The final counts, each customer message's answer time (by its key), and what went wrong."""
    from messaging.models import Message

    problems: list[str] = []
    customers = list(
        Message.objects.filter(role=Message.Role.CUSTOMER)
        .select_related("conversation__contact")
        .order_by("pk")
    )
    replies: dict[int, list[Message]] = {}
    for reply in Message.objects.filter(role=Message.Role.AGENT, reply_to__isnull=False):
        replies.setdefault(reply.reply_to_id, []).append(reply)  # type: ignore[arg-type]
    sends = Counter((str(r.body.get("to")), json.dumps(r.body, sort_keys=True)) for r in stack.graph.sends())
    sent_to: dict[str, float] = {}
    for at, to in stack.sends_at:
        sent_to.setdefault(to, at)
    counts = Counter[str]()
    answered: dict[str, float] = {}
    by_key: dict[str, Message] = {}
    for customer in customers:
        by_key[customer.client_message_id or customer.channel_message_id] = customer
        mine = replies.get(customer.pk, [])
        counts["messages"] += 1
        if not mine:
            counts["lost"] += 1
            problems.append(f"no reply to message {customer.pk} ({customer.status})")
            continue
        if len(mine) > 1:
            counts["doubled"] += 1
            problems.append(f"{len(mine)} replies to message {customer.pk}: {[r.pk for r in mine]}")
        reply = mine[0]
        if reply.status == Message.Status.STREAMING:
            counts["stuck streaming"] += 1
            problems.append(f"reply {reply.pk} still streaming")
            continue
        if not reply.text.strip():
            counts["empty"] += 1
            problems.append(f"reply {reply.pk} {reply.status} without text")
        counts[f"replied {reply.status}"] += 1
        key = customer.client_message_id or customer.channel_message_id
        finished = reply.updated_at.timestamp()
        if customer.channel == "whatsapp":
            to = customer.conversation.contact.external_id
            if reply.delivery == Message.Delivery.AMBIGUOUS:
                counts["sends unconfirmed"] += 1
            elif reply.delivery not in (Message.Delivery.SENT, Message.Delivery.DELIVERED):
                counts["sends lost"] += 1
                problems.append(f"reply {reply.pk} to {to} not sent ({reply.delivery!r}: {reply.error})")
                continue
            if to not in sent_to:
                counts["sends lost"] += 1
                problems.append(f"reply {reply.pk} to {to} never reached the Graph stand-in")
                continue
            finished = sent_to[to]
        answered[key] = finished
    counts["Graph sends doubled"] = sum(1 for n in sends.values() if n > 1)
    for (to, _body), n in sends.items():
        if n > 1:
            problems.append(f"Graph send to {to} made {n} times")
    for record in load.sent:
        if record.acked is None:
            counts[f"{record.kind} never accepted"] += 1
            problems.append(f"{record.kind} {record.key} was never accepted")
        elif record.key not in by_key:
            counts["webhook deliveries lost" if record.kind == "whatsapp" else "lost"] += 1
            problems.append(f"{record.kind} {record.key} accepted, but no customer message holds it")
    from messaging.models import WebhookDelivery

    counts["webhook deliveries"] = WebhookDelivery.objects.count()
    counts["webhook deliveries not done"] = WebhookDelivery.objects.exclude(
        state=WebhookDelivery.State.DONE
    ).count()
    counts["widget messages"] = sum(1 for r in load.sent if r.kind == "widget")
    counts["whatsapp messages"] = sum(1 for r in load.sent if r.kind == "whatsapp")
    return dict(counts), answered, problems


def recovery(
    fault: Fault, previous: Fault | None, load: Load, answered: dict[str, float]
) -> tuple[float | None, int]:
    """Seconds from the injection until every message sent before the fault ended (and after the previous
    fault began), not answered when it began, had its final answer; and how many such messages there were.
    None when one never got it."""
    since = previous.injected_at if previous is not None else 0.0
    affected = [
        r
        for r in load.sent
        if since < r.first_sent <= fault.ended_at and answered.get(r.key, float("inf")) > fault.injected_at
    ]
    last = max([fault.injected_at, fault.settled_at, *(answered.get(r.key, float("inf")) for r in affected)])
    return (None if last == float("inf") else last - fault.injected_at), len(affected)


# --- Main ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="how long the load runs (default 4)")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes: the faults 20 s apart")
    parser.add_argument("--keep", action="store_true", help="keep the scratch data folder and the logs")
    args = parser.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    if os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL"):
        print("bench/faults.py restarts its own embedded PostgreSQL and Redis: unset DATABASE_URL/REDIS_URL")
        return 2
    # A short path: PostgreSQL's socket path must fit in 107 bytes.
    data = Path(tempfile.mkdtemp(prefix="bzf-", dir="/tmp"))
    logs = Logs(data / "logs")
    stack = Stack(data, logs)
    started = now()
    failed = True
    try:
        print(f"scratch data folder: {data}", flush=True)
        stack.start_services()
        business = make_business()
        stack.start_processes()
        original_answer = stack.graph._answer

        def recording_answer(path: str, headers: dict[str, str], body: Any) -> Any:
            result = original_answer(path, headers, body)
            if isinstance(body, dict) and body.get("to"):
                stack.sends_at.append((now(), str(body.get("to"))))
            return result

        stack.graph._answer = recording_answer  # type: ignore[method-assign]
        print(f"stack ready in {now() - started:.0f} s; load for {minutes:g} min", flush=True)
        load = Load(
            widget_url=f"ws://127.0.0.1:{stack.port}/ws/chat/{business.widget_key}/",
            webhook_url=f"{stack.base}/webhooks/whatsapp",
        )
        seconds = minutes * 60
        warmup = 15.0
        spacing = (seconds - warmup - 20) / len(FAULTS)
        faults = [Fault(name) for name, _ in FAULTS]
        loop = asyncio.new_event_loop()
        load_thread = threading.Thread(target=lambda: loop.run_until_complete(load.run(seconds)), daemon=True)
        load_start = now()
        load_thread.start()
        for index, ((_name, inject), fault) in enumerate(zip(FAULTS, faults, strict=True)):
            time.sleep(max(0.0, load_start + warmup + index * spacing - now()))
            inject(stack, fault)
            print(
                f"  {fault.name}: {fault.detail}; over after {fault.ended_at - fault.injected_at:.1f} s",
                flush=True,
            )
        load_thread.join()
        waited = drain(stack, 120)
        counts, answered, problems = tally(stack, load)
        rows: list[dict[str, Any]] = []
        for fault, previous in zip(faults, [None, *faults[:-1]], strict=True):
            seconds_to_recover, affected = recovery(fault, previous, load, answered)
            rows.append(
                {
                    "fault": fault.name,
                    "injected_at_s": round(fault.injected_at - load_start, 1),
                    "over_after_s": round(fault.ended_at - fault.injected_at, 1),
                    "recovered_after_s": None if seconds_to_recover is None else round(seconds_to_recover, 1),
                    "messages_affected": affected,
                    "detail": fault.detail,
                }
            )
        print()
        print(f"{'fault':<38} {'injected at':>11} {'over after':>10} {'recovered after':>15} {'affected':>8}")
        for row in rows:
            recovered = "never" if row["recovered_after_s"] is None else f"{row['recovered_after_s']:.1f} s"
            print(
                f"{row['fault']:<38} {row['injected_at_s']:>9.1f} s {row['over_after_s']:>8.1f} s "
                f"{recovered:>15} {row['messages_affected']:>8}"
            )
        print()
        for key in (
            "messages",
            "widget messages",
            "whatsapp messages",
            "replied done",
            "replied failed",
            "lost",
            "doubled",
            "stuck streaming",
            "empty",
            "Graph sends doubled",
            "sends lost",
            "sends unconfirmed",
            "webhook deliveries",
            "webhook deliveries lost",
            "webhook deliveries not done",
        ):
            print(f"  {key:<28} {counts.get(key, 0)}")
        print(f"  drained in {waited:.0f} s; client-side errors (retried): {dict(load.errors)}")
        for problem in problems[:30]:
            print(f"  ! {problem}")
        bad = sum(
            counts.get(k, 0)
            for k in (
                "lost",
                "doubled",
                "stuck streaming",
                "empty",
                "Graph sends doubled",
                "sends lost",
                "webhook deliveries lost",
                "webhook deliveries not done",
                "widget never accepted",
                "whatsapp never accepted",
            )
        )
        slow = [
            r for r in rows if r["recovered_after_s"] is None or r["recovered_after_s"] >= RECOVERY_BUDGET
        ]
        failed = bool(bad or slow)
        result = {
            "bench": "faults",
            "minutes": minutes,
            "date": dt.datetime.now(dt.UTC).date().isoformat(),
            "cores": os.cpu_count(),
            "faults": rows,
            "tally": counts,
            "client_errors": dict(load.errors),
            "problems": problems,
            "passed": not failed,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\n{'PASS' if not failed else 'FAIL'}: results in {RESULTS.relative_to(ROOT)}")
    finally:
        stack.stop()
        logs.close()
        if args.keep or failed:
            print(f"logs kept in {data / 'logs'}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    return 1 if failed else 0


def make_business() -> Any:
    from businesses.services import business_create
    from catalogs.services.imports import import_file
    from tests.fixtures.catalogs import SMALL_CATALOG_CSV
    from tests.fixtures.meta import connect

    business = business_create(name="Faults bench", allowed_origins=[ORIGIN])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.csv"
        path.write_text(SMALL_CATALOG_CSV)
        import_file(business=business, path=path, mode="upsert", embed=True)
    connect(business)
    return business


if __name__ == "__main__":
    raise SystemExit(main())
