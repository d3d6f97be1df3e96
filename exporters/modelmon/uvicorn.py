"""``python -m modelmon.uvicorn``: uvicorn, with the metrics directory cleared at start.

Takes uvicorn's own arguments (``python -m modelmon.uvicorn app:app --workers 4``) and
runs its command line after removing the previous run's files from
``PROMETHEUS_MULTIPROC_DIR``. Dead or recycled workers (uvicorn restarts them, and
``--limit-max-requests`` recycles them) are folded at the next scrape.

``MODELMON_METRICS_PORT`` (and ``MODELMON_METRICS_ADDR``, default 127.0.0.1): this
process, uvicorn's supervisor with ``--workers``, serves ``/metrics`` summed over the
workers on that port of its own, so that the app's port need not
(``PrometheusMiddleware(app, metrics_path=None)``).
"""
from __future__ import annotations

import os
import sys

from .serving.multiprocess import multiprocess_dir
from .serving.worker_files import MetricsDirectory


def main(argv: list[str] | None = None) -> None:
    path = multiprocess_dir()
    if path is None:
        sys.exit("modelmon.uvicorn: set PROMETHEUS_MULTIPROC_DIR to an empty directory before starting")
    MetricsDirectory(path).clear()
    port = os.environ.get("MODELMON_METRICS_PORT")
    if port:
        if not port.isdigit():
            sys.exit(f"modelmon.uvicorn: MODELMON_METRICS_PORT must be a port number, got {port!r}")
        from .serving.exposition import start_http_server

        start_http_server(int(port), addr=os.environ.get("MODELMON_METRICS_ADDR", "127.0.0.1"))
    import uvicorn.main

    uvicorn.main.main(args=sys.argv[1:] if argv is None else argv, prog_name="python -m modelmon.uvicorn")


if __name__ == "__main__":
    main()
