"""ASGI middleware (FastAPI, Starlette): HTTP metrics by route template, and /metrics."""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry

from .exposition import metrics_payload
from .http import UNMATCHED, HttpMetrics

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


class PrometheusMiddleware:
    """``app.add_middleware(PrometheusMiddleware)``.

    The handler label is the matched route's path template (``/items/{item_id}``),
    as the router records it in ``scope["route"]``; requests no route matched share
    the handler ``unmatched``. ``metrics_path`` is answered by the middleware itself.
    """

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry | None = None, metrics_path: str = "/metrics"):
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
