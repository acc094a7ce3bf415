"""OpenTelemetry traces of a reply (socket -> task -> retrieval -> pool -> send), exported over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the ``otel`` extra is installed; otherwise every call here is one
check of a module global, and the SDK is never imported.

Spans carry ids, sizes, outcomes and timings: never a prompt, a question or a reply's text (a customer's
words would leave for the collector). The trace crosses the Celery hop in the message's headers: ``headers()``
when a task is published, ``task_started``/``task_finished`` (Celery's signals, config.celery) in the worker.
The OTLP exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables itself (headers, timeout).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span, Tracer

Attribute = str | int | float | bool

# None: not looked at yet (the first span of the process looks, after any fork: a Celery child sets up its
# own exporter thread); False: tracing is off in this process.
_tracer: Tracer | bool | None = None
# The span of each task running in this process, by task id, from task_started to task_finished.
_task_spans: dict[str, tuple[Span, object]] = {}
_NOTHING = contextlib.nullcontext()


def install(processor: SpanProcessor) -> None:
    """Trace this process's work through ``processor`` (a batch OTLP export, or a test's in-memory one)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    global _tracer
    provider = TracerProvider(resource=Resource.create({"service.name": _service_name()}))
    provider.add_span_processor(processor)
    _tracer = provider.get_tracer("bizagent")


def _service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME", "bizagent")


def _active() -> Tracer | None:
    global _tracer
    if _tracer is None:
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            install(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            _tracer = False
    return _tracer or None  # type: ignore[return-value]


def span(name: str, **attributes: Attribute) -> contextlib.AbstractContextManager[object]:
    """A span around a block (not across an async generator's ``yield``: its context would be detached in
    another one), the current one as its parent."""
    tracer = _active()
    if tracer is None:
        return _NOTHING
    return tracer.start_as_current_span(name, attributes=attributes)


def record(name: str, *, started_ns: int, ended_ns: int, **attributes: Attribute) -> None:
    """A span for work measured as it went (a pool call, whose stream yields across contexts), after it
    ended."""
    tracer = _active()
    if tracer is None:
        return
    done = tracer.start_span(name, start_time=started_ns, attributes=attributes)
    done.end(end_time=ended_ns)


def headers() -> dict[str, str] | None:
    """The current trace's ``traceparent`` for a task's message headers; None when there is none."""
    if _active() is None:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier or None


def task_started(task_id: str, name: str, request: Any) -> None:
    """The task's span, a child of the publisher's. A worker puts the message's headers on the request
    itself; ``apply`` (an eager task) keeps them in ``request.headers``."""
    tracer = _active()
    if tracer is None:
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract
    from opentelemetry.trace import set_span_in_context

    nested: Mapping[str, Any] = getattr(request, "headers", None) or {}
    carrier = {
        key: value
        for key in ("traceparent", "tracestate")
        if (value := getattr(request, key, None) or nested.get(key))
    }
    task_span = tracer.start_span(
        f"task {name}", context=extract(carrier), attributes={"celery.task_id": task_id}
    )
    _task_spans[task_id] = (task_span, context.attach(set_span_in_context(task_span)))


def task_finished(task_id: str, state: str | None) -> None:
    entry = _task_spans.pop(task_id, None)
    if entry is None:
        return
    from opentelemetry import context

    task_span, token = entry
    task_span.set_attribute("celery.state", state or "")
    task_span.end()
    context.detach(token)  # type: ignore[arg-type]
