"""Flask integration: HTTP metrics by route template, and a /metrics endpoint."""
from __future__ import annotations

import time

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry

from .serving.exposition import metrics_payload
from .serving.http import HttpMetrics, UNMATCHED

_HANDLER_KEY = "modelmon.handler"


def instrument_app(app: Flask, *, registry: CollectorRegistry | None = None,
                   metrics_path: str | None = "/metrics") -> None:
    """Count and time every request of ``app`` and serve ``metrics_path``.

    ``metrics_path=None`` serves no metrics on the app's port: serve them elsewhere with
    ``modelmon.start_http_server`` (or ``modelmon.gunicorn.serve_metrics``).

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

    if metrics_path is None:
        return

    def metrics_view():
        body, content_type = metrics_payload(request.headers.get("Accept"), registry)
        return Response(body, content_type=content_type)

    app.add_url_rule(metrics_path, endpoint="modelmon_metrics", view_func=metrics_view)


def add_feedback_route(app: Flask, monitor, path: str = "/feedback", *, token: str | None = None,
                       token_file: str | None = None, max_bytes: int | None = None, limits=None) -> None:
    """``POST path`` joins delayed labels to predictions (see ``modelmon.feedback``).

    The body is read from the WSGI stream up to ``max_bytes`` (default 1 MiB) and refused
    past it (413) before anything is parsed; ``token`` / ``token_file`` (else
    ``MODELMON_FEEDBACK_TOKEN`` / ``MODELMON_FEEDBACK_TOKEN_FILE``) require
    ``Authorization: Bearer <token>``. Raises ``FeedbackConfigError`` for a configured
    token that is empty or unreadable.
    """
    from werkzeug.exceptions import HTTPException

    from .serving.feedback import FeedbackEndpoint, Refused, too_large

    endpoint = FeedbackEndpoint(monitor, token=token, token_file=token_file, limits=limits, max_bytes=max_bytes)

    def read(n: int) -> bytes:
        # werkzeug's stream: bounded by Content-Length, or the server's terminated input
        # (gunicorn, chunked); max_content_length makes werkzeug refuse the rest, too.
        return request.stream.read(n)

    def feedback_view():
        request.max_content_length = endpoint.max_bytes + 1
        try:
            status, answer, headers = endpoint.handle(request.headers, read)
        except HTTPException as exc:  # werkzeug's own stream limit, or a malformed request
            refused = too_large(endpoint.max_bytes) if exc.code == 413 else Refused(exc.code or 400, exc.name)
            status, answer, headers = endpoint.refused(refused)
        return answer, status, headers

    app.add_url_rule(path, endpoint="modelmon_feedback", view_func=feedback_view, methods=["POST"])
