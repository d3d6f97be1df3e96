"""Scrape cost: ``GET /metrics`` of a monitor with 10, 100 and 500 features.

Three quarters of the features numeric, a quarter categorical, every bin counted at
least once; 1,000 more rows observed before every scrape so each one folds pending
counts, as in a service. Served by ``modelmon.start_http_server`` on loopback and read
with urllib; median of 9 scrapes, with prometheus-client's ``_created`` series (the
default) and without (``PROMETHEUS_DISABLE_CREATED_SERIES``); wall and CPU time.
"""
from __future__ import annotations

import statistics
import time
import urllib.request

import prometheus_client
from prometheus_client import CollectorRegistry

from benchmarks.common import arguments, free_port, split, table, target, training_data, write_result
from modelmon import ModelMonitor, Reference, start_http_server

SIZES = (10, 100, 500)


def scrapes(url: str, between, count: int) -> tuple[float, float, bytes]:
    """Median wall and CPU seconds of ``count`` scrapes, ``between()`` called before each; the last body.

    Server and client share this process, so its CPU time is the scrape's, whatever else the
    machine runs; the client's part (one urllib read) is small.
    """
    wall, cpu, body = [], [], b""
    for _ in range(count):
        between()
        start, start_cpu = time.perf_counter(), time.process_time()
        body = urllib.request.urlopen(url, timeout=60).read()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), body


def main() -> None:
    args = arguments(__doc__)
    count = 3 if args.quick else 9
    rows_md, results = [], {}
    for n in SIZES:
        numeric = round(n * 0.75)
        data = training_data(numeric, n - numeric, rows=5000)
        ref = Reference.from_data(data, model="wide", version="1", prediction="price")
        registry = CollectorRegistry()
        monitor = ModelMonitor("wide", "1", ref, registry=registry)
        features, predictions = split(data)
        monitor.observe_batch(features, predictions)
        more = (features.head(1000), predictions[:1000])
        port = free_port()
        start_http_server(port, addr="127.0.0.1", registry=registry)
        url = f"http://127.0.0.1:{port}/metrics"
        result = {}
        for created in (True, False):
            (prometheus_client.enable_created_metrics if created else prometheus_client.disable_created_metrics)()
            seconds, cpu, body = scrapes(url, lambda: monitor.observe_batch(*more), count)
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            result[created] = {"seconds": seconds, "cpu_seconds": cpu, "bytes": len(body), "series": series}
        prometheus_client.enable_created_metrics()
        results[n] = result
        rows_md.append([n, f"{numeric} / {n - numeric}"] + [
            cell for created in (True, False) for cell in (
                f"{result[created]['seconds'] * 1e3:.1f}", f"{result[created]['cpu_seconds'] * 1e3:.1f}",
                f"{result[created]['bytes'] / 1024:,.0f}", f"{result[created]['series']:,}")
        ])
    markdown = (
        f"Median of {count} scrapes over HTTP on loopback, each after 1,000 more observed rows; wall time, "
        "and CPU time of the process serving and reading it (what the scrape costs, however busy the "
        "machine is).\n\n"
        + table(["features", "numeric / categorical", "ms", "CPU ms", "KiB", "series",
                 "ms, no _created", "CPU ms, no _created", "KiB, no _created", "series, no _created"], rows_md)
    )
    cpu_100 = results[100][True]["cpu_seconds"]
    targets = [target("scrape of a 100-feature model under 50 ms (CPU time)",
                      f"{cpu_100 * 1e3:.1f} ms CPU, {results[100][True]['seconds'] * 1e3:.1f} ms wall", cpu_100 < 0.05)]
    write_result(args, "Scrape cost", markdown, targets,
                 {str(n): {str(k): v for k, v in r.items()} for n, r in results.items()})


if __name__ == "__main__":
    main()
