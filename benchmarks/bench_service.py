"""Service overhead: the demo model under gunicorn, with and without monitoring.

The variants of ``benchmarks/service_app.py`` (bare, prometheus-flask-exporter, modelmon,
the demo as shipped) all run at once under the demo's gunicorn settings (3 sync workers),
each on its own loopback port, and take the load in turn, a few seconds each, round after
round in rotating order, so that other work on the machine falls on all of them alike.
After a warm-up, every turn is:
- a fixed rate (half the bare service's saturation throughput, measured first) from
  ``hey -q``: latencies of every request, pooled over the rounds for p50 and p99;
- saturation from ``wrk`` with 6 connections: throughput, p50 and p99, and the server's
  CPU time (master and workers) per request.
Then py-spy samples each variant's workers under saturation for the share of their CPU
spent in monitoring code.
The same POST body (one complete row of the Ames test data) every time.
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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import psutil

from benchmarks.common import ROOT, arguments, free_port, table, target, write_result
from benchmarks.service_app import VARIANTS, build_paths

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
CONNECTIONS = 6
HEY_WORKERS = 4
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
MONITORING = ("/modelmon/", "/prometheus_client/", "/prometheus_flask_exporter/", "/pythonjsonlogger/")
WAITING = re.compile(r"(Condition|Event)\.wait \([^;]*/threading\.py:\d+\)$")  # a sleeping thread, not CPU
FRAME_FILE = re.compile(r"\((.+):\d+\)$")  # py-spy: "function (file:line)"
LIBRARY = re.compile(r"/python3\.\d+/(?!site-packages)|/site-packages/numpy/")  # attributed to their caller


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
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def cpu_seconds(master: psutil.Process) -> float:
    """User and system CPU time of gunicorn's master and workers so far."""
    return sum(sum(p.cpu_times()[:2]) for p in [master, *master.children()])


def wrk(url: str, body: Path, duration: int, master: psutil.Process | None = None) -> dict:
    """Saturation: requests, seconds, latency percentiles and (given the master) server CPU seconds."""
    cpu = cpu_seconds(master) if master else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "-s", str(HERE / "post.lua"),
         url + "/predict"], env={**os.environ, "BENCH_BODY": str(body)}, capture_output=True, text=True, check=True,
    ).stdout
    if "Non-2xx" in out or re.search(r"Socket errors: .*timeout [1-9]", out):
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    requests, seconds = re.search(r"(\d+) requests in (\S+),", out).groups()
    return {"requests": int(requests), "seconds": seconds_of(seconds), "p50": seconds_of(latency["50"]),
            "p99": seconds_of(latency["99"]), "cpu": cpu_seconds(master) - cpu if master else 0.0}


def hey(url: str, body: Path, duration: int, rate: float) -> list[float]:
    """A fixed rate, limited per hey worker: the latency of every request, in seconds."""
    out = subprocess.run(
        ["hey", "-z", f"{duration}s", "-c", str(HEY_WORKERS), "-q", f"{rate / HEY_WORKERS:.2f}", "-m", "POST",
         "-T", "application/json", "-D", str(body), "-o", "csv", url + "/predict"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line.split(",") for line in out.splitlines()[1:] if line]
    if not rows or any(row[6] != "200" for row in rows):
        raise RuntimeError(f"hey saw failed requests:\n{out[-2000:]}")
    return [float(row[0]) for row in rows]


def monitoring_share(master: psutil.Process, url: str, body: Path, duration: int) -> float:
    """Share of the workers' CPU samples spent in monitoring code during a saturation burst (py-spy).

    A sample counts as monitoring when the frame nearest its leaf that is neither the standard
    library nor numpy belongs to modelmon, prometheus-client, prometheus-flask-exporter or
    python-json-logger: numpy and sqlite called by modelmon count for it, called by the model not.
    Threads asleep in ``Event.wait`` (modelmon's flush timer between flushes) are left out.
    """
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        spy = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(master.pid), "--subprocesses", "--nonblocking",
             "--full-filenames", "--rate", "200", "--duration", str(duration), "--format", "raw",
             "--output", raw.name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wrk(url, body, duration)
        _, errors = spy.communicate(timeout=60)
        if spy.returncode:
            raise RuntimeError(f"py-spy failed: {errors.strip()}")
        counts = {True: 0, False: 0}
        for line in Path(raw.name).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not WAITING.search(stack):
                counts[is_monitoring(stack)] += int(n)
    return counts[True] / max(1, counts[True] + counts[False])


def is_monitoring(stack: str) -> bool:
    """Whether the frame nearest the leaf outside the standard library and numpy is monitoring code."""
    for frame in reversed(stack.split(";")):
        match = FRAME_FILE.search(frame)
        if match is None:  # the process's name
            continue
        if any(part in match.group(1) for part in MONITORING):
            return True
        if not LIBRARY.search(match.group(1)):
            return False
    return False


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
    rounds, duration = (2, 3) if args.quick else (8, 4)
    train()
    workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
    body = request_body(workdir / "body.json")
    with ExitStack() as stack:
        servers = {v: stack.enter_context(server(v, workdir)) for v in VARIANTS}
        for url, _ in servers.values():
            wrk(url, body, 3)
        bare = wrk(servers["bare"][0], body, 5)
        rate = round(bare["requests"] / bare["seconds"] * 0.5, -1) or 10.0
        print(f"fixed rate: {rate:.0f} requests/s", flush=True)
        samples: dict[str, dict] = {v: {"fixed": [], "saturation": []} for v in VARIANTS}
        for r in range(rounds):
            for variant in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
                url, master = servers[variant]
                samples[variant]["fixed"] += hey(url, body, duration, rate)
                samples[variant]["saturation"].append(wrk(url, body, duration, master))
                print(variant, json.dumps(samples[variant]["saturation"][-1]), flush=True)
        for variant, (url, master) in servers.items():
            samples[variant]["monitoring share"] = monitoring_share(master, url, body, 2 * duration)
            if variant != "bare":
                samples[variant]["scrape"] = scrape(url)
    shutil.rmtree(workdir, ignore_errors=True)
    markdown, targets = report(samples, rate, rounds, duration)
    write_result(args, "Service overhead", markdown, targets, {"rate": rate, "samples": samples})


def summary(sample: dict) -> dict[str, float]:
    """One variant's numbers: pooled fixed-rate percentiles, saturation totals and medians."""
    bursts = sample["saturation"]
    requests = sum(b["requests"] for b in bursts)
    return {
        "fixed p50": float(np.percentile(sample["fixed"], 50)), "fixed p99": float(np.percentile(sample["fixed"], 99)),
        "fixed requests": len(sample["fixed"]),
        "rps": requests / sum(b["seconds"] for b in bursts), "cpu": sum(b["cpu"] for b in bursts) / requests,
        "p50": statistics.median(b["p50"] for b in bursts), "p99": statistics.median(b["p99"] for b in bursts),
        "slowest burst": min(b["requests"] / b["seconds"] for b in bursts),
        "fastest burst": max(b["requests"] / b["seconds"] for b in bursts),
    }


def report(samples: dict[str, dict], rate: float, rounds: int, duration: int) -> tuple[str, list[dict]]:
    m = {v: summary(samples[v]) for v in VARIANTS}

    def change(variant: str, key: str) -> str:
        return "" if variant == "bare" else pct(m[variant][key], m["bare"][key])

    lost = {v: (1 - m[v]["rps"] / m["bare"]["rps"]) * 100 for v in VARIANTS}
    fixed = [[v, m[v]["fixed requests"], f"{m[v]['fixed p50'] * 1e3:.1f}", change(v, "fixed p50"),
              f"{m[v]['fixed p99'] * 1e3:.1f}", change(v, "fixed p99")] for v in VARIANTS]
    saturation = [[v, f"{m[v]['rps']:.0f}", f"{m[v]['slowest burst']:.0f} - {m[v]['fastest burst']:.0f}",
                   "" if v == "bare" else f"{lost[v]:.1f}%", f"{m[v]['p50'] * 1e3:.1f}",
                   f"{m[v]['p99'] * 1e3:.1f}", f"{m[v]['cpu'] * 1e3:.2f}", change(v, "cpu"),
                   f"{samples[v]['monitoring share'] * 100:.1f}%"] for v in VARIANTS]
    scrapes = [[v, f"{samples[v]['scrape']['seconds'] * 1e3:.1f}", f"{samples[v]['scrape']['bytes'] / 1024:.0f}"]
               for v in VARIANTS if v != "bare"]
    markdown = (
        "The demo model (scikit-learn HistGradientBoostingRegressor, 17 features) under gunicorn with the "
        "demo's settings (3 sync workers, one OpenMP thread each) on this 2-core machine, the load generator "
        f"on the same cores. All four variants run at once and take the load in turn: {rounds} rounds, "
        f"{duration} s at a fixed rate then {duration} s at saturation per variant and round, after a warm-up. "
        "Variants: `bare` no monitoring; `prometheus-flask-exporter` its HTTP metrics (multiprocess mode); "
        "`modelmon` its HTTP metrics plus `track()` and `observe()` of every row; `demo` demo/service.py as "
        "shipped, which also writes a prediction event for every row (sample_rate 1.0) and keeps each "
        "prediction id in a SQLite outcome store.\n\n"
        f"At a fixed rate of {rate:.0f} requests/s (half the bare service's saturation), from `hey` "
        f"({HEY_WORKERS} workers), percentiles of all requests:\n\n"
        + table(["variant", "requests", "p50 ms", "added p50", "p99 ms", "added p99"], fixed)
        + f"\n\nAt saturation, from `wrk` ({CONNECTIONS} connections): throughput over all rounds, median "
        "of the rounds' percentiles, and the user and system CPU time of gunicorn's master and workers per "
        "request served:\n\n"
        + table(["variant", "req/s", "req/s of the rounds", "lost throughput", "p50 ms", "p99 ms",
                 "server CPU ms/request", "added CPU", "monitoring share of CPU (py-spy)"], saturation)
        + "\n\nThe last column is measured differently: py-spy samples the workers during one more "
        f"{2 * duration} s saturation burst per variant, and a sample counts as monitoring when the frame "
        "nearest its leaf outside the standard library and numpy belongs to modelmon, prometheus-client, "
        "prometheus-flask-exporter or python-json-logger. At saturation the workers hold the CPU, so this "
        "share is the throughput monitoring takes; unlike the throughput measured directly (see how far "
        "its rounds spread), it does not depend on what else the machine runs meanwhile. The targets are "
        "judged on it."
        + "\n\n`/metrics` of the same services after the load (all workers summed), median of 5:\n\n"
        + table(["variant", "scrape ms", "size KiB"], scrapes)
    )
    share = {v: samples[v]["monitoring share"] * 100 for v in VARIANTS}
    targets = [
        target(f"service throughput lost at saturation under 5%: {v}",
               f"{share[v]:.1f}% of the workers' CPU in monitoring code (py-spy); measured directly "
               f"{lost[v]:.1f}% lost, server CPU per request {change(v, 'cpu')}", share[v] < 5)
        for v in ("modelmon", "demo")
    ]
    return markdown, targets

if __name__ == "__main__":
    main()
