"""Service overhead: the demo model under gunicorn, with and without monitoring.

The variants of ``benchmarks/service_app.py`` (bare, prometheus-flask-exporter, modelmon,
the demo as shipped) run one after the other under the demo's gunicorn settings (3 sync
workers) on loopback, round after round in rotating order. Each gets a warm-up, then:
- a fixed rate (half the bare service's saturation throughput, measured first) from
  ``hey -q``: p50 and p99 latency;
- saturation from ``wrk`` with 6 connections: throughput, p50 and p99.
The same POST body (one complete row of the Ames test data) every time; medians over rounds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pandas as pd
import psutil

from benchmarks.common import ROOT, arguments, table, target, write_result
from benchmarks.service_app import VARIANTS, build_paths

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
CONNECTIONS = 6
HEY_WORKERS = 4
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def train() -> None:
    """The demo model and reference, trained by demo.train in this virtualenv into the benchmark build."""
    import demo.train

    with mock.patch.multiple("demo.train", **build_paths()):
        demo.train.main()


def request_body(path: Path) -> Path:
    from demo.model import DATA, FEATURES

    row = pd.read_csv(DATA / "test.csv")[FEATURES].dropna().iloc[0]
    path.write_text(json.dumps({"features": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}}))
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(variant: str, workdir: Path):
    """gunicorn serving one variant on a free loopback port; yields its base URL and process."""
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=workdir))
    (run_dir / "metrics").mkdir()
    env = {**os.environ, "BENCH_VARIANT": variant, "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"),
           "MODELMON_EVENTS_DIR": str(run_dir / "events"), "MODELMON_OUTCOMES": str(run_dir / "outcomes.sqlite"),
           # One OpenMP thread per worker in every variant: the demo's threadpool_limits(1) runs before
           # scikit-learn loads OpenMP, and 3 workers x 2 spinning threads on 2 cores swamp any other cost.
           "OMP_NUM_THREADS": "1"}
    log = open(run_dir / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", str(HERE / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
         "benchmarks.service_app:create()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{variant} did not start: {(run_dir / 'gunicorn.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def seconds_of(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * UNITS[unit]


def cpu_seconds(master: psutil.Process) -> float:
    """User and system CPU time of gunicorn's master and workers so far."""
    return sum(sum(p.cpu_times()[:2]) for p in [master, *master.children()])


def wrk(url: str, body: Path, duration: int, master: psutil.Process | None = None) -> dict:
    """Saturation: throughput, latency percentiles and (given the master) server CPU per request."""
    cpu = cpu_seconds(master) if master else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "-s", str(HERE / "post.lua"),
         url + "/predict"], env={**os.environ, "BENCH_BODY": str(body)}, capture_output=True, text=True, check=True,
    ).stdout
    if "Non-2xx" in out or re.search(r"Socket errors: .*timeout [1-9]", out):
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": seconds_of(latency["50"]), "p99": seconds_of(latency["99"]),
            "cpu": (cpu_seconds(master) - cpu) / requests if master else 0.0}


def hey(url: str, body: Path, duration: int, rate: float) -> dict:
    """A fixed rate: latency percentiles from hey, rate-limited per worker."""
    out = subprocess.run(
        ["hey", "-z", f"{duration}s", "-c", str(HEY_WORKERS), "-q", f"{rate / HEY_WORKERS:.2f}", "-m", "POST",
         "-T", "application/json", "-D", str(body), url + "/predict"], capture_output=True, text=True, check=True,
    ).stdout
    statuses = re.findall(r"\[(\d+)\]\s+\d+ responses", out)
    if statuses != ["200"]:
        raise RuntimeError(f"hey saw failed requests:\n{out}")
    latency = dict(re.findall(r"(50|99)%+ in ([\d.]+) secs", out))
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": float(latency["50"]), "p99": float(latency["99"])}


def scrape(url: str) -> dict:
    """Median time of five GET /metrics and the size of the answer."""
    times, size = [], 0
    for _ in range(5):
        start = time.perf_counter()
        size = len(urllib.request.urlopen(url + "/metrics", timeout=30).read())
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "bytes": size}


def pct(value: float, base: float) -> str:
    return f"{(value - base) / base * 100:+.1f}%"


def main() -> None:
    args = arguments(__doc__)
    rounds, duration = (1, 4) if args.quick else (5, 6)
    train()
    workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
    body = request_body(workdir / "body.json")
    with server("bare", workdir) as (url, _):
        wrk(url, body, 5)
        rate = round(wrk(url, body, duration)["rps"] * 0.5, -1) or 10.0
    print(f"fixed rate: {rate:.0f} requests/s", flush=True)
    samples: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
            with server(variant, workdir) as (url, master):
                wrk(url, body, 3)
                sample = {"fixed": hey(url, body, duration, rate), "saturation": wrk(url, body, duration, master)}
                if variant != "bare":
                    sample["scrape"] = scrape(url)
            samples[variant].append(sample)
            print(variant, json.dumps(sample), flush=True)
    shutil.rmtree(workdir, ignore_errors=True)

    markdown, targets = report(samples, rate, rounds, duration)
    write_result(args, "Service overhead", markdown, targets, {"rate": rate, "samples": samples})


def report(samples: dict[str, list[dict]], rate: float, rounds: int, duration: int) -> tuple[str, list[dict]]:
    def median(variant: str, phase: str, key: str) -> float:
        return statistics.median(s[phase][key] for s in samples[variant])

    def change(variant: str, phase: str, key: str) -> str:
        return "" if variant == "bare" else pct(median(variant, phase, key), median("bare", phase, key))

    fixed = [[v, f"{median(v, 'fixed', 'rps'):.0f}", f"{median(v, 'fixed', 'p50') * 1e3:.1f}",
              change(v, "fixed", "p50"), f"{median(v, 'fixed', 'p99') * 1e3:.1f}", change(v, "fixed", "p99")]
             for v in VARIANTS]
    lost = {v: -(median(v, "saturation", "rps") / median("bare", "saturation", "rps") - 1) * 100 for v in VARIANTS}
    saturation = [[v, f"{median(v, 'saturation', 'rps'):.0f}", "" if v == "bare" else f"{lost[v]:.1f}%",
                   f"{median(v, 'saturation', 'p50') * 1e3:.1f}", f"{median(v, 'saturation', 'p99') * 1e3:.1f}",
                   f"{median(v, 'saturation', 'cpu') * 1e3:.2f}", change(v, "saturation", "cpu")]
                  for v in VARIANTS]
    scrapes = [[v, f"{statistics.median(s['scrape']['seconds'] for s in samples[v]) * 1e3:.1f}",
                f"{samples[v][-1]['scrape']['bytes'] / 1024:.0f}"] for v in VARIANTS if v != "bare"]
    markdown = (
        "The demo model (scikit-learn HistGradientBoostingRegressor, 17 features) under gunicorn with the "
        "demo's settings (3 sync workers, one OpenMP thread each) on this 2-core machine, the load generator "
        f"on the same cores. {duration} s per measurement after a 3 s warm-up, median of {rounds} round(s) "
        "in rotating order, each variant freshly started. Variants: `bare` no monitoring; "
        "`prometheus-flask-exporter` its HTTP metrics (multiprocess mode); `modelmon` its HTTP metrics plus "
        "`track()` and `observe()` of every row; `demo` demo/service.py as shipped, which also writes a "
        "prediction event for every row (sample_rate 1.0) and keeps each prediction id in a SQLite outcome "
        f"store.\n\nAt a fixed rate of {rate:.0f} requests/s (half the bare service's saturation), from `hey` "
        f"({HEY_WORKERS} workers):\n\n"
        + table(["variant", "req/s", "p50 ms", "added p50", "p99 ms", "added p99"], fixed)
        + f"\n\nAt saturation, from `wrk` ({CONNECTIONS} connections); server CPU is the user and system time "
        "of gunicorn's master and workers per request served, which other load on the machine disturbs "
        "far less than throughput:\n\n"
        + table(["variant", "req/s", "lost throughput", "p50 ms", "p99 ms", "server CPU ms/request",
                 "added CPU"], saturation)
        + "\n\n`/metrics` of the same services after the load (all workers summed), median of 5:\n\n"
        + table(["variant", "scrape ms", "size KiB"], scrapes)
    )
    targets = [
        target(f"service throughput lost at saturation under 5%: {v}", f"{lost[v]:.1f}%"
               f" (server CPU per request {change(v, 'saturation', 'cpu')})", lost[v] < 5)
        for v in ("modelmon", "demo")
    ]
    return markdown, targets

if __name__ == "__main__":
    main()
