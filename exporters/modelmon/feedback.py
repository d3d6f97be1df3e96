"""Delayed labels over HTTP: ``POST /feedback`` with one label or a list of them.

Body: ``{"prediction_id": "p-1", "actual": 208500}`` or a list of such objects.
Answer: how many were joined to their prediction and how many were not.
"""
from __future__ import annotations

from typing import Any

from .monitor import ModelMonitor

MAX_LABELS_PER_REQUEST = 10_000


def record_labels(monitor: ModelMonitor, body: Any) -> tuple[int, dict[str, Any]]:
    """Join the labels of a request body; returns (HTTP status, JSON answer)."""
    labels = body if isinstance(body, list) else [body]
    if len(labels) > MAX_LABELS_PER_REQUEST:
        return 413, {"error": f"at most {MAX_LABELS_PER_REQUEST} labels per request"}
    if not all(isinstance(x, dict) and "prediction_id" in x and "actual" in x for x in labels):
        return 400, {"error": 'expected {"prediction_id": ..., "actual": ...} or a list of them'}
    joined = sum(monitor.record_outcome(str(x["prediction_id"]), x["actual"]) for x in labels)
    return 200, {"joined": joined, "unmatched": len(labels) - joined}
