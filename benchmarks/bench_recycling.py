"""Worker recycling: the multiprocess directory and the cost of reading it at scrape.

Three gunicorn servers (3 sync workers, a Flask app with 40 numeric features
instrumented with modelmon) take the same requests at the same time: one without
recycling, two with ``--max-requests 1`` (a new worker per request): one with
modelmon's hooks (``child_exit`` folds dead workers' files), one with
prometheus-client's own ``mark_process_dead`` only, as before modelmon folded.
Then, with the servers idle, each directory is read the way a scrape reads it
(prometheus-client's ``MultiProcessCollector`` and the text exposition): files,
bytes, and the median CPU time of 9 reads, as a ratio to the directory without
recycling.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from benchmarks.common import ROOT, arguments, free_port, mib, table, target, write_result
from modelmon.serving.reference import Reference
from modelmon.serving.worker_files import MetricsDirectory

FEATURES = [f"x{i:02d}" for i in range(40)]
HOOKS = {
    "modelmon": "from modelmon.gunicorn import child_exit, on_starting  # noqa: F401\n",
    "prometheus-client": (
        "from prometheus_client.multiprocess import mark_process_dead\n"
        "from modelmon.gunicorn import on_starting  # noqa: F401\n"
        "def child_exit(server, worker):\n    mark_process_dead(worker.pid)\n"
    ),
}


def start(root: Path, reference: Path, hooks: str, recycle: bool) -> tuple[subprocess.Popen, str, Path]:
    metrics = root / "metrics"
    metrics.mkdir(parents=True)
    (root / "gunicorn.conf.py").write_text(HOOKS[hooks])
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "MODELMON_REFERENCE": str(reference),
           "PYTHONPATH": str(ROOT / "tests" / "fixtures")}
    command = [sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn.conf.py"), "-w", "3",
               "-b", f"127.0.0.1:{port}"] + (["--max-requests", "1"] if recycle else []) + ["wide_flask_app:app"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(url + "/predict", timeout=2)
            return proc, url, metrics
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not start: {command}")


def predict(url: str, row: dict) -> int:
    for _ in range(400):
        try:
            return requests.post(url + "/predict", json=row, headers={"Connection": "close"}, timeout=10).json()["pid"]
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("the server stopped answering")


def read_cost(path: Path, count: int = 9) -> float:
    """Median CPU seconds of reading the directory as a scrape does."""
    times = []
    for _ in range(count):
        start = time.process_time()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(path))
        generate_latest(registry)
        times.append(time.process_time() - start)
    return statistics.median(times)


def describe(path: Path) -> tuple[int, int]:
    files = list(path.glob("*.db"))
    return len(files), sum(f.stat().st_size for f in files)


def main() -> None:
    args = arguments(__doc__)
    recycles = 200 if args.quick else 1_000
    work = Path(tempfile.mkdtemp(prefix="bench-recycling-"))
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({name: rng.normal(0.0, 1.0, 2_000) for name in FEATURES})
    frame["y"] = frame.sum(axis=1)
    reference = work / "reference.yaml"
    Reference.from_data(frame, model="wide", version="1.0", prediction="y").save(reference)
    variants = {"no recycling": ("modelmon", False), "recycled, modelmon hooks": ("modelmon", True),
                "recycled, prometheus-client only": ("prometheus-client", True)}
    servers = {name: start(work / str(i), reference, *spec) for i, (name, spec) in enumerate(variants.items())}
    rows = [{name: float(v) for name, v in zip(FEATURES, rng.normal(0.0, 1.0, 40))} for _ in range(32)]
    sent = recycles + 3
    started = time.monotonic()
    try:
        lifetimes = {}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = {name: [pool.submit(predict, url, rows[i % 32]) for i in range(sent)]
                       for name, (_, url, _) in servers.items()}
            for name, fs in futures.items():
                lifetimes[name] = len({f.result() for f in fs})
        elapsed = time.monotonic() - started
        time.sleep(2)  # every worker has flushed (MODELMON_FLUSH_INTERVAL 1 s)
        measured = {name: (*describe(path), read_cost(path)) for name, (_, _, path) in servers.items()}
        unfolded = servers["recycled, prometheus-client only"][2]
        copy = work / "folded-copy"
        shutil.copytree(unfolded, copy)
        dead = len(MetricsDirectory(str(copy)).dead_worker_files(os.listdir(copy)))
        fold_start = time.perf_counter()
        MetricsDirectory(str(copy)).fold_dead_workers()
        fold_seconds = time.perf_counter() - fold_start
        measured["prometheus-client's directory, then folded once"] = (*describe(copy), read_cost(copy))
    finally:
        for proc, _, _ in servers.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    base_files, _, base_cost = measured["no recycling"]
    table_rows = [[name, lifetimes.get(name, ""), files, f"{mib(size):.1f}", f"{cost * 1e3:.1f}",
                   f"{cost / base_cost:.2f}x", f"{files / base_files:.1f}x"]
                  for name, (files, size, cost) in measured.items()]
    folded_files, _, folded_cost = measured["recycled, modelmon hooks"]
    markdown = (
        f"{sent:,} requests to each server at once ({elapsed:.0f} s); then each directory read as a scrape "
        f"reads it (median CPU time of 9 reads). One offline fold of prometheus-client's directory "
        f"({dead:,} dead workers' files) took {fold_seconds * 1e3:.0f} ms.\n\n"
        + table(["directory", "worker lifetimes", "files", "MiB", "read ms CPU", "read vs no recycling",
                 "files vs no recycling"], table_rows)
    )
    targets = [
        target(f"after {recycles:,} recycles, at most 2x the files of no recycling",
               f"{folded_files} vs {base_files} files", folded_files <= 2 * base_files if not args.quick else None),
        target(f"after {recycles:,} recycles, a scrape's read at most 1.5x no recycling",
               f"{folded_cost / base_cost:.2f}x", folded_cost <= 1.5 * base_cost if not args.quick else None),
    ]
    write_result(args, "Worker recycling", markdown, targets,
                 {"recycles": recycles, "measured": measured, "fold_seconds": fold_seconds, "dead_files": dead})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
