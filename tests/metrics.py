"""Reading the process metrics (common.metrics) the way /metrics does."""

from __future__ import annotations

from common.metrics import registry


def metric_value(name: str, **labels: str) -> float:
    """The sample's value, 0 before its first increment (a labelled series exists only from then)."""
    return registry().get_sample_value(name, labels) or 0.0
