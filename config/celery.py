"""The Celery app. Queues: ``replies`` (latency-sensitive), ``ingest`` (imports, embeddings), ``outbound``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_shutdown, worker_shutdown
from kombu.entity import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("bizagent")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = tuple(
    Queue(name, Exchange(name), routing_key=name) for name in ("replies", "ingest", "outbound")
)
app.conf.task_routes = {
    "messaging.tasks.reply": {"queue": "replies"},
    # With the replies it re-queues, not behind an import on ingest: a killed worker's reply waits on it.
    "messaging.tasks.sweep_replies": {"queue": "replies"},
    # Reading a photo or voice note is on its reply's path: the reply waits for it.
    "messaging.tasks.read_media": {"queue": "replies"},
    "messaging.tasks.send_*": {"queue": "outbound"},
    "messaging.meta.tasks.process_delivery": {"queue": "replies"},
    "messaging.meta.tasks.process_pending": {"queue": "replies"},
    "messaging.meta.tasks.send_*": {"queue": "outbound"},
    "messaging.meta.tasks.mark_read": {"queue": "outbound"},
    "messaging.meta.tasks.sweep_sends": {"queue": "outbound"},
    "catalogs.tasks.*": {"queue": "ingest"},
    # A regression run asks the agent many questions: batch work, never ahead of a customer's reply.
    "regressions.tasks.*": {"queue": "ingest"},
    "dashboard.tasks.*": {"queue": "outbound"},
    "webhooks.tasks.*": {"queue": "outbound"},
}
app.autodiscover_tasks()


@worker_init.connect
def _embedded_services(**_: object) -> None:
    # A worker started on its own (not by the stack) with the embedded defaults still finds its services.
    # worker_init runs once in the main process: forked pool children must not take handles of their own.
    from devstack import services

    services.ensure_core_services()


@task_prerun.connect
def _task_span_start(task_id: str, task: Any, **_: object) -> None:
    from common import tracing

    tracing.task_started(task_id, task.name, task.request)


@task_postrun.connect
def _task_span_end(task_id: str, state: str | None = None, **_: object) -> None:
    from common import tracing

    tracing.task_finished(task_id, state)


@worker_shutdown.connect
@worker_process_shutdown.connect
def _stop_reply_loop(**_: object) -> None:
    from common import aio

    aio.stop()
