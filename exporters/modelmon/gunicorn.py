"""gunicorn server hooks for multiprocess mode.

In ``gunicorn.conf.py``::

    from modelmon.gunicorn import child_exit, on_starting  # noqa: F401

with ``PROMETHEUS_MULTIPROC_DIR`` exported before gunicorn starts. Works with sync,
threaded and uvicorn workers, with or without ``--preload``.
"""
from __future__ import annotations

from .multiprocess import multiprocess_dir
from .worker_files import MetricsDirectory


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
