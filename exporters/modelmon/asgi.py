"""ASGI (FastAPI, Starlette): HTTP metrics by route template, /metrics, and /feedback."""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry

from .serving.exposition import metrics_payload
from .serving.http import UNMATCHED, HttpMetrics

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


class PrometheusMiddleware:
    """``app.add_middleware(PrometheusMiddleware)``.

    The handler label is the matched route's path template (``/items/{item_id}``),
    as the router records it in ``scope["route"]``; requests no route matched share
    the handler ``unmatched``. ``metrics_path`` is answered by the middleware itself;
    ``metrics_path=None`` serves no metrics on the app's port (serve them elsewhere with
    ``modelmon.start_http_server``).
    """

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry | None = None,
                 metrics_path: str | None = "/metrics"):
        self.app = app
        self.registry = registry
        self.metrics_path = metrics_path
        self.http = HttpMetrics(registry)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = ["500"]

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        self.http.started()
        try:
            if scope["path"] == self.metrics_path:
                await self._serve_metrics(scope, capture)
            else:
                await self.app(scope, receive, capture)
        finally:
            if scope["path"] == self.metrics_path:
                handler = self.metrics_path
            else:
                handler = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.http.finished(handler, scope.get("method", ""), status[0], time.perf_counter() - start)

    async def _serve_metrics(self, scope: Scope, send: Callable) -> None:
        accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin-1")
        body, content_type = metrics_payload(accept, self.registry)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})


def feedback_route(monitor, path: str = "/feedback", *, token: str | None = None, token_file: str | None = None,
                   max_bytes: int | None = None, limits=None):
    """A Starlette ``Route`` for ``POST path``: delayed labels, as ``modelmon.flask.add_feedback_route``.

    The body is taken from ``receive()`` chunk by chunk and refused (413) past
    ``max_bytes`` (default 1 MiB) before anything is parsed; a ``Content-Length`` over it
    is refused without reading. ``token`` / ``token_file`` (else ``MODELMON_FEEDBACK_TOKEN``
    / ``MODELMON_FEEDBACK_TOKEN_FILE``) require ``Authorization: Bearer <token>``.
    Raises ``FeedbackConfigError`` at once for a configured token that is empty or
    unreadable. FastAPI or Starlette: ``app.router.routes.append(feedback_route(monitor))``,
    or ``add_feedback_route(app, monitor)``.
    """
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from .serving.feedback import FeedbackEndpoint, Refused, too_large

    feedback = FeedbackEndpoint(monitor, token=token, token_file=token_file, limits=limits, max_bytes=max_bytes)

    async def endpoint(request: Request) -> JSONResponse:
        headers = request.headers
        try:
            feedback.precheck(headers.get("authorization"), headers.get("content-type"), headers.get("content-length"))
            body = bytearray()
            try:
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > feedback.max_bytes:
                        raise too_large(feedback.max_bytes)
            except ClientDisconnect:
                raise Refused(400, "the client disconnected before the end of the body") from None
            status, answer = feedback.finish(bytes(body))
            extra: dict[str, str] = {}
        except Refused as refused:
            status, answer, extra = feedback.refused(refused)
        extra = {k: v for k, v in extra.items() if k.lower() != "content-type"}
        return JSONResponse(answer, status_code=status, headers=extra)

    return Route(path, endpoint, methods=["POST"], name="modelmon_feedback")


def add_feedback_route(app, monitor, path: str = "/feedback", **options) -> None:
    """Add ``feedback_route(monitor, path, **options)`` to a FastAPI or Starlette app."""
    app.router.routes.append(feedback_route(monitor, path, **options))
