"""End to end, as the stack runs replies: workers of the threads pool (all of a process's replies on its one
event loop) and a beat that runs the reply sweeper. A SIGKILLed threads-pool worker takes its unacknowledged
reply with it (``task_reject_on_worker_lost`` applies to prefork children only, and the broker would only
redeliver after its visibility timeout): the sweeper queues it again, and a surviving worker finishes it in
the same row well within 30 s. The prefork version is in test_e2e_chat.py."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from messaging.models import Message
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV
from tests.fixtures.stack import StackProcess, declare_queues, start_worker
from tests.messaging.test_e2e_chat import CHATTY, TENT_FACTS, long_reply_under_way

pytestmark = pytest.mark.django_db(transaction=True)


def _reply_worker(env: dict[str, str], logs: Path, name: str) -> StackProcess:
    return start_worker(env, logs / f"{name}.log", pool="threads", concurrency=8, queues="replies", name=name)


@pytest.fixture(scope="module")
def celery_worker(stack_env: dict[str, str], stack_logs: Path) -> Iterator[StackProcess]:
    # Overrides the stack's prefork worker for this module: the first of two threads-pool reply workers.
    declare_queues()
    worker = _reply_worker(stack_env, stack_logs, "replies-a")
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def second_worker(stack_env: dict[str, str], stack_logs: Path) -> Iterator[StackProcess]:
    worker = _reply_worker(stack_env, stack_logs, "replies-b")
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def beat(stack_env: dict[str, str], stack_logs: Path) -> Iterator[StackProcess]:
    """``celery beat`` with the settings' schedule (the reply sweeper every REPLY_SWEEP_SECONDS, 10 s)."""
    process = StackProcess(
        "celery beat",
        [
            *(sys.executable, "-m", "celery", "-A", "config", "beat"),
            *("--schedule", str(stack_logs / "celerybeat-schedule"), "-l", "INFO"),
        ],
        stack_env,
        stack_logs / "beat.log",
    ).start()
    process.wait_for_log("beat: Starting", timeout=60)
    yield process
    process.stop()


def _pid(worker: StackProcess) -> int:
    assert worker.proc is not None
    return worker.proc.pid


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    return business


def test_a_sigkilled_threads_pool_worker_s_reply_is_finished_within_30_seconds(
    stack: Any, second_worker: StackProcess, beat: StackProcess, shop: Any
) -> None:
    workers = {_pid(stack.worker): stack.worker, _pid(second_worker): second_worker}
    answer = f"{TENT_FACTS} {CHATTY}"
    client, customer, reply = long_reply_under_way(stack, shop, token_delay=0.01)
    customer_id = customer.pk
    # Threads pool: the reply runs in the worker process itself, which the kill takes down whole.
    pid = int(customer.claimed_by.split(":")[1])
    assert pid in workers
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    done = client.until("message.done", timeout=30)
    assert time.monotonic() - killed_at < 30
    assert (done["text"], done["status"], done["message_id"]) == (answer, "done", reply.pk)
    # The restart began again in the same row: its first delta after the kill said so.
    assert any(f.get("reset") for f in client.deltas(reply.pk))
    time.sleep(1.0)
    replies = Message.objects.filter(conversation_id=customer.conversation_id, role="agent")
    assert [(r.pk, r.status, r.text) for r in replies] == [(reply.pk, "done", answer)]
    customer = Message.objects.get(pk=customer_id)
    assert customer.status == "answered"
    survivor = next(worker for worker_pid, worker in workers.items() if worker_pid != pid)
    assert customer.claimed_by.split(":")[1] == str(_pid(survivor))
    client.close()
