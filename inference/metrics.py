"""Prometheus metrics of the pool, gathered in Redis so that ``/metrics`` on any web process reports the
calls of every Celery worker on every machine (in-process counters would show only the web process's own).

Exported (prefix ``bizagent_inference_``): ``requests_total{kind,endpoint,outcome}`` (outcome ``refused``,
endpoint ``none``: a business cap or budget refused the call before anything was sent),
``tokens_total{endpoint,type}`` (per business: the ``InferenceCall`` rows, never a label), ``first_token_seconds{endpoint}`` and ``duration_seconds{endpoint}``
histograms, ``panic_total{endpoint}`` (tries routed in panic mode: no endpoint was healthy, state.pick
counts them in the same round trip), and gauges read at scrape time: ``inflight{endpoint}``, ``circuit_open{endpoint}`` (0 closed,
1 half-open, 2 open), ``endpoint_healthy{endpoint}`` (1, 0, or -1 never probed).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common import metrics as process_metrics
from inference import state
from inference.types import CallOutcome

BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_KEY = state.PREFIX + "metrics:"
# The hashes the counters live in, in the order PoolCollector reads them.
# "tokens:by_endpoint": the hash of an older release, "tokens", had a business in each key.
_HASHES = (
    "requests",
    "tokens:by_endpoint",
    "first_token",
    "first_token:sum",
    "duration",
    "duration:sum",
    "panic",
)
_SEP = "\x1f"  # endpoint URLs hold ":" and "|", never a unit separator


def _bucket(seconds: float) -> str:
    for bound in BUCKETS:
        if seconds <= bound:
            return str(bound)
    return "+Inf"


def record_call(
    *,
    kind: str,
    endpoint: str,
    outcome: CallOutcome | Literal["refused"],  # refused: a business's cap or budget, nothing was sent
    prompt_tokens: int,
    completion_tokens: int,
    first_token_ms: float | None,
    total_ms: float | None,
) -> None:
    """One pipelined round trip per call."""
    endpoint = endpoint or "none"
    pipe = state.client().pipeline(transaction=False)
    pipe.hincrby(_KEY + "requests", _SEP.join((kind, endpoint, outcome)), 1)
    if prompt_tokens:
        pipe.hincrby(_KEY + "tokens:by_endpoint", _SEP.join((endpoint, "prompt")), prompt_tokens)
    if completion_tokens:
        pipe.hincrby(_KEY + "tokens:by_endpoint", _SEP.join((endpoint, "completion")), completion_tokens)
    for name, ms in (("first_token", first_token_ms), ("duration", total_ms)):
        if ms is None:
            continue
        pipe.hincrby(_KEY + name, _SEP.join((endpoint, _bucket(ms / 1000))), 1)
        pipe.hincrbyfloat(_KEY + name + ":sum", endpoint, ms / 1000)
    pipe.execute()


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in raw.items()}


class PoolCollector:
    def collect(self) -> Iterator[Metric]:
        from inference.endpoints import pool_endpoints

        client = state.client()
        pipe = client.pipeline(transaction=False)
        for name in _HASHES:
            pipe.hgetall(_KEY + name)
        requests, tokens, first, first_sum, duration, duration_sum, panic = map(_decode, pipe.execute())

        counter = CounterMetricFamily(
            "bizagent_inference_requests", "Calls to the pool", labels=["kind", "endpoint", "outcome"]
        )
        for key, value in sorted(requests.items()):
            counter.add_metric(key.split(_SEP), float(value))
        yield counter
        token_counter = CounterMetricFamily(
            "bizagent_inference_tokens",
            "Tokens by endpoint",
            labels=["endpoint", "type"],
        )
        for key, value in sorted(tokens.items()):
            token_counter.add_metric(key.split(_SEP), float(value))
        yield token_counter
        panic_counter = CounterMetricFamily(
            "bizagent_inference_panic",
            "Tries routed while no endpoint was healthy (panic mode)",
            labels=["endpoint"],
        )
        for key, value in sorted(panic.items()):
            panic_counter.add_metric([key], float(value))
        yield panic_counter
        for name, help_text, buckets, sums in (
            ("first_token_seconds", "Time to first token", first, first_sum),
            ("duration_seconds", "Whole call", duration, duration_sum),
        ):
            histogram = HistogramMetricFamily(f"bizagent_inference_{name}", help_text, labels=["endpoint"])
            for endpoint in sorted(sums):
                cumulative, rows = 0, []
                for bound in (*BUCKETS, "+Inf"):
                    cumulative += int(buckets.get(_SEP.join((endpoint, str(bound))), 0))
                    rows.append((str(bound), float(cumulative)))
                histogram.add_metric([endpoint], rows, sum_value=float(sums[endpoint]))
            yield histogram

        endpoints = [endpoint.url for endpoint in pool_endpoints()]
        states = state.read_states(endpoints)
        inflight = GaugeMetricFamily("bizagent_inference_inflight", "Requests in flight", labels=["endpoint"])
        circuit = GaugeMetricFamily(
            "bizagent_inference_circuit_open", "0 closed, 1 half-open, 2 open", labels=["endpoint"]
        )
        healthy = GaugeMetricFamily(
            "bizagent_inference_endpoint_healthy",
            "Last probe: 1 ok, 0 not, -1 never probed",
            labels=["endpoint"],
        )
        for url in endpoints:
            current = states[url]
            inflight.add_metric([url], current.inflight)
            circuit.add_metric([url], {"closed": 0, "half_open": 1}.get(current.circuit, 2))
            healthy.add_metric([url], -1 if current.healthy is None else int(current.healthy))
        yield inflight
        yield circuit
        yield healthy


def render() -> bytes:
    """The pool's counters (from Redis) and the process's own (``common.metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector())
    return generate_latest(registry) + generate_latest(process_metrics.registry())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus text format. It names the pool's endpoints, so it answers a scraper
    that sends ``Authorization: Bearer <METRICS_TOKEN>``; without a token configured, only with DEBUG on.
    Not "loopback only": behind a reverse proxy on the same host every request comes from loopback."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("A bearer token (METRICS_TOKEN) is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    elif not settings.DEBUG:
        return HttpResponseForbidden("Set METRICS_TOKEN to scrape /metrics.\n")
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)


def reset() -> None:
    state.client().delete(*(_KEY + name for name in _HASHES))
