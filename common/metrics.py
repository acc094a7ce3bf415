"""The process's own Prometheus metrics: what replies, intake, imports and sends came to.

Each is incremented in one line where its outcome is decided (the engine, the services), in process memory:
no round trip, nothing per token. Labels take bounded values only, never a business: hundreds of tenants must
not multiply the series (per-business figures are the analytics', from the rows).

Celery's prefork children are processes of their own. With ``PROMETHEUS_MULTIPROC_DIR`` set (to one empty
directory per host, shared by the web and worker processes there), prometheus_client keeps these values in
files in it and ``registry()`` sums every process's; without it, each process reports only its own. The pool's
counters are gathered in Redis instead (``inference.metrics``): they predate this module and are cluster-wide.

Exported (prefix ``bizagent_``): ``replies_total{outcome}`` (``engine.ReplyOutcome``),
``reply_first_token_seconds`` (from the task's start to the first text the customer sees),
``reply_failures_total{reason}`` (``error``, ``transient``: a transient error on the last try, ``abandoned``:
finished by the sweeper), ``webhook_intake_total{platform,outcome}`` (``accepted``, ``duplicate``,
``too_large``, ``bad_signature``), ``imports_total{state}``, ``import_rows_total{result}`` (``created``,
``updated``, ``unchanged``, ``retired``, ``failed``), ``sends_total{channel,outcome}`` (each Graph API request
of a message's part: ``sent``, ``refused``, ``ambiguous``, ``transient``) and
``webhook_deliveries_total{outcome}`` (outbound webhook attempts: ``succeeded``, ``failed``, ``abandoned``,
``skipped``).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

_OWN = CollectorRegistry(auto_describe=True)

REPLIES = Counter("bizagent_replies", "Reply tasks by what became of them", ["outcome"], registry=_OWN)
REPLY_FIRST_TOKEN = Histogram(
    "bizagent_reply_first_token_seconds",
    "From the reply task's start to the first text sent to the customer",
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
    registry=_OWN,
)
REPLY_FAILURES = Counter(
    "bizagent_reply_failures", "Replies finished failed, by reason", ["reason"], registry=_OWN
)
WEBHOOK_INTAKE = Counter(
    "bizagent_webhook_intake", "Meta webhook deliveries received", ["platform", "outcome"], registry=_OWN
)
IMPORTS = Counter("bizagent_imports", "Catalog imports finished, by state", ["state"], registry=_OWN)
IMPORT_ROWS = Counter(
    "bizagent_import_rows", "Rows of finished imports, by result", ["result"], registry=_OWN
)
SENDS = Counter(
    "bizagent_sends", "Graph API sends of messages' parts, by outcome", ["channel", "outcome"], registry=_OWN
)
WEBHOOK_DELIVERIES = Counter(
    "bizagent_webhook_deliveries",
    "Outbound webhook delivery attempts, by outcome",
    ["outcome"],
    registry=_OWN,
)


def registry() -> CollectorRegistry:
    """What ``/metrics`` reports of these: every process of the host in multiprocess mode, else this one's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return _OWN
    host = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(host)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
    return host
