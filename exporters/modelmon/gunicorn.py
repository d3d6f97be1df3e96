"""gunicorn server hooks for multiprocess mode.

In ``gunicorn.conf.py``::

    from modelmon.gunicorn import child_exit, on_starting  # noqa: F401

with ``PROMETHEUS_MULTIPROC_DIR`` exported before gunicorn starts.
"""
from __future__ import annotations

import glob
import os

from prometheus_client import multiprocess

from .multiprocess import multiprocess_dir


def on_starting(server) -> None:
    """Start from an empty metrics directory: stale files of a previous run would be summed."""
    path = multiprocess_dir()
    if path is None:
        raise RuntimeError("modelmon.gunicorn: set PROMETHEUS_MULTIPROC_DIR before starting gunicorn")
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (in-progress requests, model info)."""
    multiprocess.mark_process_dead(worker.pid)
