"""HTTP metrics shared by the Flask and ASGI integrations."""
from __future__ import annotations

from prometheus_client import CollectorRegistry

from .metrics import metrics_for

UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


class HttpMetrics:
    """Requests, durations and in-progress gauge; failures are counted, never raised."""

    def __init__(self, registry: CollectorRegistry | None = None):
        metrics = metrics_for(registry)
        self._requests = metrics["http_requests"]
        self._duration = metrics["http_request_duration_seconds"]
        self._in_progress = metrics["http_requests_in_progress"]
        self._errors = metrics.errors

    def started(self) -> None:
        try:
            self._in_progress.inc()
        except Exception as exc:
            self._errors.count("http", exc)

    def finished(self, handler: str, method: str, status: str, seconds: float) -> None:
        try:
            method = method if method in KNOWN_METHODS else "other"
            self._in_progress.dec()
            self._requests.labels(handler, method, status).inc()
            self._duration.labels(handler, method).observe(seconds)
        except Exception as exc:
            self._errors.count("http", exc)
