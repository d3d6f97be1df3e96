"""Flask integration: HTTP metrics by route template, and a /metrics endpoint."""
from __future__ import annotations

import time

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry

from .exposition import metrics_payload
from .http import HttpMetrics, UNMATCHED

_HANDLER_KEY = "modelmon.handler"


def instrument_app(app: Flask, *, registry: CollectorRegistry | None = None, metrics_path: str = "/metrics") -> None:
    """Count and time every request of ``app`` and serve ``metrics_path``.

    The handler label is the matched rule (``/predict/<model>``), never the raw path;
    requests no rule matched share the handler ``unmatched``.
    """
    http = HttpMetrics(registry)
    inner = app.wsgi_app

    @app.teardown_request
    def _remember_rule(exc):  # runs inside the request context, before wsgi_app returns
        rule = request.url_rule
        request.environ[_HANDLER_KEY] = rule.rule if rule is not None else UNMATCHED

    def wsgi_app(environ, start_response):
        start = time.perf_counter()
        status = ["500"]

        def capture(status_line, headers, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        http.started()
        try:
            return inner(environ, capture)
        finally:
            http.finished(
                environ.get(_HANDLER_KEY, UNMATCHED), environ.get("REQUEST_METHOD", ""), status[0],
                time.perf_counter() - start,
            )

    app.wsgi_app = wsgi_app

    def metrics_view():
        body, content_type = metrics_payload(request.headers.get("Accept"), registry)
        return Response(body, content_type=content_type)

    app.add_url_rule(metrics_path, endpoint="modelmon_metrics", view_func=metrics_view)


def add_feedback_route(app: Flask, monitor, path: str = "/feedback") -> None:
    """``POST path`` joins delayed labels to predictions (see ``modelmon.feedback``)."""
    from .feedback import record_labels

    def feedback_view():
        status, answer = record_labels(monitor, request.get_json(silent=True))
        return answer, status

    app.add_url_rule(path, endpoint="modelmon_feedback", view_func=feedback_view, methods=["POST"])
