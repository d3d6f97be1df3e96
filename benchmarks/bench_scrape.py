"""Scrape cost: ``GET /metrics`` of a monitor with 10, 100 and 500 features.

Three quarters of the features numeric, a quarter categorical, every bin counted at
least once; 1,000 more rows observed before every scrape so each one folds pending
counts, as in a service. Served by ``modelmon.start_http_server`` on loopback and read
with urllib; median of 9 scrapes, with prometheus-client's ``_created`` series (the
default) and without (``PROMETHEUS_DISABLE_CREATED_SERIES``).
"""
from __future__ import annotations

import socket
import statistics
import time
import urllib.request

import prometheus_client
from prometheus_client import CollectorRegistry

from benchmarks.common import arguments, split, table, target, training_data, write_result
from modelmon import ModelMonitor, Reference, start_http_server

SIZES = (10, 100, 500)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrapes(url: str, between, count: int) -> tuple[float, bytes]:
    """Median seconds of ``count`` scrapes, ``between()`` called before each; and the last body."""
    times, body = [], b""
    for _ in range(count):
        between()
        start = time.perf_counter()
        body = urllib.request.urlopen(url, timeout=60).read()
        times.append(time.perf_counter() - start)
    return statistics.median(times), body


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
            seconds, body = scrapes(url, lambda: monitor.observe_batch(*more), count)
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            result[created] = {"seconds": seconds, "bytes": len(body), "series": series}
        prometheus_client.enable_created_metrics()
        results[n] = result
        rows_md.append([n, f"{numeric} / {n - numeric}"] + [
            cell for created in (True, False) for cell in (
                f"{result[created]['seconds'] * 1e3:.1f}", f"{result[created]['bytes'] / 1024:,.0f}",
                f"{result[created]['series']:,}")
        ])
    markdown = (
        f"Median of {count} scrapes over HTTP on loopback, each after 1,000 more observed rows.\n\n"
        + table(["features", "numeric / categorical", "scrape ms", "size KiB", "series",
                 "scrape ms, no _created", "size KiB, no _created", "series, no _created"], rows_md)
    )
    scrape_100 = results[100][True]["seconds"]
    targets = [target("scrape of a 100-feature model under 50 ms", f"{scrape_100 * 1e3:.1f} ms", scrape_100 < 0.05)]
    write_result(args, "Scrape cost", markdown, targets,
                 {str(n): {str(k): v for k, v in r.items()} for n, r in results.items()})


if __name__ == "__main__":
    main()
