"""Memory: resident set size while one process observes 10 million rows, twice.

The 20-feature rows of the per-row benchmark, a scrape (``generate_latest``) every
100,000 rows as a Prometheus server would ask, and VmRSS read from /proc at every
million rows. First the metrics alone (``observe(row, prediction)``), then a second
monitor whose rows also carry a unique prediction id, kept for delayed labels in the
default in-memory outcome store (``max_rows`` 100,000). The target: flat within 10 MB
from 1 to 10 million rows.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.common import arguments, mib, proc_status, rows_of, table, target, training_data, write_result
from modelmon import ModelMonitor, Reference

LIMIT_MB = 10
SCRAPE_EVERY = 100_000


def run(monitor: ModelMonitor, registry: CollectorRegistry, pairs: list, total: int, step: int,
        ids: bool) -> tuple[dict[int, int], float]:
    """RSS every ``step`` rows while ``total`` rows are observed; and the seconds it took."""
    rss, done = {0: proc_status()["VmRSS"]}, 0
    start = time.perf_counter()
    while done < total:
        for _ in range(SCRAPE_EVERY // len(pairs)):
            if ids:
                for row, prediction in pairs:
                    monitor.observe(row, prediction, prediction_id=f"p{done}")
                    done += 1
            else:
                for row, prediction in pairs:
                    monitor.observe(row, prediction)
                done += len(pairs)
        generate_latest(registry)
        if done % step == 0:
            rss[done] = proc_status()["VmRSS"]
            print(f"{'with ids' if ids else 'metrics'} {done:>12,} rows  {mib(rss[done]):7.1f} MiB", flush=True)
    return rss, time.perf_counter() - start


def main() -> None:
    args = arguments(__doc__)
    total, step = (2_000_000, 200_000) if args.quick else (10_000_000, 1_000_000)
    ref = Reference.from_data(training_data(), model="m", version="1", prediction="price")
    rows, predictions = rows_of(training_data(rows=2000, seed=19))
    pairs = list(zip(rows, predictions))
    series, spread, seconds = {}, {}, {}
    for ids in (False, True):
        registry = CollectorRegistry()
        monitor = ModelMonitor("m", "1", ref, registry=registry)
        series[ids], seconds[ids] = run(monitor, registry, pairs, total, step, ids)
        settled = [v for n, v in series[ids].items() if n >= step]
        spread[ids] = (max(settled) - min(settled)) / 1e6
    markdown = (
        f"{total:,} rows each; metrics alone took {seconds[False]:.0f} s "
        f"({seconds[False] / total * 1e6:.1f} us per row), with prediction ids {seconds[True]:.0f} s "
        f"({seconds[True] / total * 1e6:.1f} us per row); a scrape every {SCRAPE_EVERY:,} rows.\n\n"
        + table(["rows observed", "RSS MiB, metrics", "RSS MiB, metrics + prediction ids"],
                [[f"{n:,}", f"{mib(series[False][n]):.1f}", f"{mib(series[True][n]):.1f}"] for n in series[False]])
        + f"\n\nSpread of RSS from {step:,} to {total:,} rows: {spread[False]:.1f} MB for the metrics, "
        f"{spread[True]:.1f} MB with prediction ids."
    )
    decided = total >= 10_000_000
    targets = [
        target(f"memory flat within {LIMIT_MB} MB from 1 to 10 million observed rows{label}",
               f"{spread[ids]:.1f} MB" + ("" if decided else f" ({step:,} to {total:,} rows only)"),
               spread[ids] <= LIMIT_MB if decided else None)
        for ids, label in ((False, ""), (True, ", with prediction ids"))
    ]
    write_result(args, "Memory", markdown, targets,
                 {"rss_bytes": {str(ids): {str(n): v for n, v in s.items()} for ids, s in series.items()},
                  "seconds": {str(ids): s for ids, s in seconds.items()}})


if __name__ == "__main__":
    main()
