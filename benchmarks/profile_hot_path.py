"""Where modelmon's time goes: pyinstrument profiles of its hot paths on the benchmark data.

``python -m benchmarks.profile_hot_path [NAME ...]`` prints the call tree of each named
case (default: all); run_all.py puts them in docs/benchmarks.md.
"""
from __future__ import annotations

import itertools
import sys
import tempfile
import time

from prometheus_client import CollectorRegistry
from pyinstrument import Profiler

from benchmarks.common import rows_of, split, training_data
from modelmon import ModelMonitor, Reference
from modelmon.pipeline.events import EventLog


def cases(events_dir: str) -> dict:
    """Name -> (what it does, a call doing it once), all on fresh monitors of the 20-feature model."""
    ref = Reference.from_data(training_data(), model="m", version="1", prediction="price")
    rows, predictions = rows_of(training_data(rows=2000, seed=11))
    ids = itertools.count()

    def monitor(**kwargs) -> ModelMonitor:
        return ModelMonitor("m", "1", ref, registry=CollectorRegistry(), **kwargs)

    def per_row(m: ModelMonitor, with_ids: bool):
        def go():
            for row, p in zip(rows, predictions):
                m.observe(row, p, prediction_id=f"p{next(ids)}" if with_ids else None)
        return go

    def batch(n: int):
        m, (features, preds) = monitor(), split(training_data(rows=n, seed=13))
        return lambda: m.observe_batch(features, preds)

    return {
        "observe": ("observe, 2,000 rows", per_row(monitor(), False)),
        "observe-ids": ("observe with prediction_id, 2,000 rows", per_row(monitor(), True)),
        "observe-events": ("observe with an EventLog (sample_rate 1.0), 2,000 rows",
                           per_row(monitor(events=EventLog(events_dir)), True)),
        "batch-1000": ("observe_batch of a 1,000-row DataFrame", batch(1000)),
        "batch-100000": ("observe_batch of a 100,000-row DataFrame", batch(100_000)),
    }


def profile(fn, seconds: float = 2.0) -> str:
    """The call tree of ``fn``, repeated for about ``seconds`` after a warm-up."""
    fn()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    return text[text.index("\nProfile at"):].split("\n", 2)[2]  # the call tree, without the banner


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-events-") as events_dir:
        known = cases(events_dir)
        for name in sys.argv[1:] or list(known):
            title, fn = known[name]
            print(f"### {name}: {title}\n\n```\n{profile(fn).strip()}\n```\n")


if __name__ == "__main__":
    main()
