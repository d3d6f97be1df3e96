"""Serving /metrics: the payload for any framework, and a standalone server."""
from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.exposition import choose_encoder

from .multiprocess import exposition_registry


def metrics_payload(accept: str | None = None, registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The exposition body and its content type, negotiated from an Accept header."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(exposition_registry(registry)), content_type


def start_http_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None):
    """Serve /metrics on its own port (batch jobs, workers); multiprocess-aware.

    Returns prometheus-client's (server, thread) pair.
    """
    return _start_http_server(port, addr=addr, registry=exposition_registry(registry))
