"""``python -m modelmon.uvicorn``: uvicorn, with the metrics directory cleared at start.

Takes uvicorn's own arguments (``python -m modelmon.uvicorn app:app --workers 4``) and
runs its command line after removing the previous run's files from
``PROMETHEUS_MULTIPROC_DIR``. Dead or recycled workers (uvicorn restarts them, and
``--limit-max-requests`` recycles them) are folded at the next scrape.
"""
from __future__ import annotations

import sys

from .multiprocess import multiprocess_dir
from .worker_files import MetricsDirectory


def main(argv: list[str] | None = None) -> None:
    path = multiprocess_dir()
    if path is None:
        sys.exit("modelmon.uvicorn: set PROMETHEUS_MULTIPROC_DIR to an empty directory before starting")
    MetricsDirectory(path).clear()
    import uvicorn.main

    uvicorn.main.main(args=sys.argv[1:] if argv is None else argv, prog_name="python -m modelmon.uvicorn")


if __name__ == "__main__":
    main()
