"""Hot-path cost of modelmon against plain prometheus-client, measured in one run.

A 20-feature row (15 numeric, 5 categorical) and one numeric prediction:
- ``observe`` per row, against the same signals recorded with ``labels().inc()``;
- ``observe_batch`` per value at batch size 1000;
- a scrape (``generate_latest``) of a monitor with 100 features.

Run: ``python benchmarks/bench_observe.py`` (prints medians and ratios).
"""
from __future__ import annotations

import statistics
import time
from bisect import bisect_right

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Summary, generate_latest

from modelmon import ModelMonitor, Reference

RNG = np.random.default_rng(7)
CATEGORIES = [f"c{i}" for i in range(12)]


def training_data(n_numeric: int, n_categorical: int, rows: int = 20_000) -> dict[str, np.ndarray]:
    data = {f"num{i}": RNG.normal(i, 1 + i / 10, rows) for i in range(n_numeric)}
    data.update({f"cat{i}": RNG.choice(CATEGORIES, rows) for i in range(n_categorical)})
    data["price"] = RNG.lognormal(12, 0.4, rows)
    return data


def rows_of(data: dict[str, np.ndarray], n: int) -> list[dict]:
    names = [k for k in data if k != "price"]
    return [{k: data[k][i].item() for k in names} for i in range(n)]


def median_ns_per(fn, items: int, repeats: int = 7) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        timings.append((time.perf_counter_ns() - start) / items)
    return statistics.median(timings)


def plain_prometheus(ref: Reference, registry: CollectorRegistry):
    """The same signals the straightforward way: one labels().inc() per value."""
    bins = Counter("plain_feature_bin", "", ["model", "version", "feature", "bin"], registry=registry)
    values = Summary("plain_feature_value", "", ["model", "version", "feature"], registry=registry)
    pred_bins = Counter("plain_prediction_bin", "", ["model", "version", "output", "bin"], registry=registry)
    preds = Counter("plain_predictions", "", ["model", "version"], registry=registry)
    numeric = {k: (p.edges, p.bin_labels) for k, p in ref.features.items() if p.kind == "numeric"}
    categorical = {k: set(p.categories) for k, p in ref.features.items() if p.kind == "categorical"}
    out = (ref.outputs["price"].edges, ref.outputs["price"].bin_labels)

    def numeric_bin(profile, x):
        edges, labels = profile
        return labels[max(min(bisect_right(edges, x) - 1, len(edges) - 2), 0)]

    def observe(row, prediction):
        for name, profile in numeric.items():
            x = row[name]
            bins.labels("m", "1", name, numeric_bin(profile, x)).inc()
            values.labels("m", "1", name).observe(x)
        for name, cats in categorical.items():
            v = row[name]
            bins.labels("m", "1", name, v if v in cats else "__unseen__").inc()
        pred_bins.labels("m", "1", "price", numeric_bin(out, prediction)).inc()
        preds.labels("m", "1").inc()

    return observe


def main() -> None:
    data = training_data(15, 5)
    ref = Reference.from_data(data, model="m", version="1", prediction="price")
    rows = rows_of(data, 2000)
    preds = data["price"][:2000].tolist()

    monitor = ModelMonitor("m", "1", ref, registry=CollectorRegistry())
    plain = plain_prometheus(ref, CollectorRegistry())

    def run_modelmon():
        for row, p in zip(rows, preds):
            monitor.observe(row, p)

    def run_plain():
        for row, p in zip(rows, preds):
            plain(row, p)

    ns_mm = median_ns_per(run_modelmon, len(rows))
    ns_plain = median_ns_per(run_plain, len(rows))
    print(f"observe, 20 features + 1 prediction: modelmon {ns_mm / 1000:.2f} us/row, "
          f"plain prometheus-client {ns_plain / 1000:.2f} us/row, ratio {ns_plain / ns_mm:.1f}x cheaper "
          f"(target <= 10 us, >= 5x)")

    frame = {k: v[:1000] for k, v in data.items() if k != "price"}
    batch_preds = data["price"][:1000]
    values = 1000 * 21

    ns_batch = median_ns_per(lambda: monitor.observe_batch(frame, batch_preds), values, repeats=21)
    print(f"observe_batch, 1000 rows x 21 values: {ns_batch / 1000:.4f} us/value "
          f"({ns_mm / 21 / ns_batch:.1f}x cheaper per value than observe; target <= 0.05 us)")

    wide = training_data(100, 0, rows=5000)
    wide_ref = Reference.from_data(wide, model="wide", version="1", prediction="price")
    registry = CollectorRegistry()
    wide_monitor = ModelMonitor("wide", "1", wide_ref, registry=registry)
    wide_monitor.observe_batch({k: v for k, v in wide.items() if k != "price"}, wide["price"])
    size = len(generate_latest(registry))
    ns_scrape = median_ns_per(lambda: generate_latest(registry), 1, repeats=9)
    print(f"scrape of 100 features: {ns_scrape / 1e6:.1f} ms, {size / 1024:.0f} KiB (target <= 50 ms)")


if __name__ == "__main__":
    main()
