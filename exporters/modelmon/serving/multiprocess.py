"""prometheus-client multiprocess mode (gunicorn and friends).

With ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus-client is imported, every
worker writes its metrics to files in that directory and a scrape served by any
worker sums them. modelmon adds four things the client leaves out:

- a timer that folds each worker's pending counts into its files (default every
  second, ``MODELMON_FLUSH_INTERVAL`` seconds), plus a final fold at exit;
- dead workers' files folded into one aggregate at each scrape (``worker_files``), so
  recycled workers never grow the directory or the scrape;
- per-worker process metrics (memory, CPU, start time, fds) with a ``pid`` label,
  read from /proc for every live worker, since the client drops its process
  collector in this mode;
- ``exposition_registry()``, the registry to serve: the multiprocess one in this
  mode, the given (or default) registry otherwise.
"""
from __future__ import annotations

import atexit
import os
import re
import threading
from typing import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .metrics import after_fork, flush_all, metrics_for
from .worker_files import MetricsDirectory, pid_alive

_PID_FILE = re.compile(r"_(\d+)\.db$")
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def flush_interval() -> float:
    value = os.environ.get("MODELMON_FLUSH_INTERVAL", "1")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"MODELMON_FLUSH_INTERVAL must be a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 3600:
        raise ValueError(f"MODELMON_FLUSH_INTERVAL must be between 0 and 3600 seconds, got {value!r}")
    return seconds


def start_flusher() -> None:
    """In multiprocess mode, start this process's folding timer (once per process)."""
    global _flusher
    if multiprocess_dir() is None:
        return
    with _flusher_lock:
        if _flusher is not None and _flusher.is_alive():
            return
        interval = flush_interval()
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(interval):
                flush_all()

        _flusher = threading.Thread(target=run, name="modelmon-flush", daemon=True)
        _flusher.start()


def _after_fork_in_child() -> None:
    global _flusher, _flusher_lock
    _flusher, _flusher_lock = None, threading.Lock()
    if after_fork():
        start_flusher()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush_all)


class _FoldingCollector(MultiProcessCollector):
    """The multiprocess collector, after folding this process's pending counts and dead workers' files."""

    def __init__(self, registry: CollectorRegistry, path: str):
        super().__init__(registry, path=path)
        self._directory = MetricsDirectory(path)

    def collect(self) -> Iterator[Metric]:
        flush_all()
        with self._directory.reading(on_error=lambda exc: metrics_for().errors.count("flush", exc)) as files:
            return self.merge(files, accumulate=True)


class WorkerProcessCollector:
    """Process metrics of every live worker writing to the multiprocess directory."""

    def __init__(self, path: str, registry: CollectorRegistry | None = None):
        self._path = path
        if registry is not None:
            registry.register(self)

    def _live_pids(self) -> list[int]:
        pids = {int(m.group(1)) for name in os.listdir(self._path) if (m := _PID_FILE.search(name))}
        return sorted(pid for pid in pids if pid_alive(pid))

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self._live_pids():
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return iter(families.values())


def exposition_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry a /metrics endpoint should serve in this process."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY if registry is None else registry
    served = CollectorRegistry()
    _FoldingCollector(served, path=path)
    WorkerProcessCollector(path, served)
    return served
