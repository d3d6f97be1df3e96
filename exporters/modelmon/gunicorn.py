"""gunicorn server hooks for multiprocess mode.

In ``gunicorn.conf.py``::

    from modelmon.gunicorn import child_exit, on_starting  # noqa: F401

with ``PROMETHEUS_MULTIPROC_DIR`` exported before gunicorn starts. Works with sync,
threaded and uvicorn workers, with or without ``--preload``.

To keep ``/metrics`` off the service's public port, serve it from the master on a port
of its own (and ``instrument_app(app, metrics_path=None)`` in the app)::

    from modelmon.gunicorn import serve_metrics
    when_ready = serve_metrics(9100, addr="127.0.0.1")
"""
from __future__ import annotations

from .serving.multiprocess import multiprocess_dir
from .serving.worker_files import MetricsDirectory


def _directory() -> MetricsDirectory:
    path = multiprocess_dir()
    if path is None:
        raise RuntimeError("modelmon.gunicorn: set PROMETHEUS_MULTIPROC_DIR before starting gunicorn")
    return MetricsDirectory(path)


def on_starting(server) -> None:
    """Start from an empty metrics directory: stale files of a previous run would be summed."""
    _directory().clear()


def child_exit(server, worker) -> None:
    """Fold a dead worker's files into the aggregate (its live gauges are dropped).

    Runs in the master after the worker is reaped and before its replacement is forked.
    A failure is logged by gunicorn and never stops the master; the next scrape retries.
    """
    try:
        _directory().fold_dead_workers()
    except Exception:
        server.log.exception("modelmon: folding the metrics files of worker %s failed", worker.pid)


def serve_metrics(port: int, addr: str = "127.0.0.1"):
    """A gunicorn ``when_ready`` hook: the master serves ``/metrics`` on ``addr:port``.

    Only one process can bind the port, so it is the master, once, before the workers
    are forked: it reads the shared directory like any scrape, so the answer is summed
    over every worker, dead workers' files folded first. ``when_ready = serve_metrics(...)``
    in ``gunicorn.conf.py``.
    """
    started: list[object] = []

    def when_ready(server) -> None:
        if started:  # a reload (SIGHUP) runs when_ready again; the server is still up
            return
        _directory()
        from .serving.exposition import start_http_server

        started.append(start_http_server(port, addr=addr))
        server.log.info("modelmon: serving /metrics on %s:%s", addr, port)

    return when_ready
