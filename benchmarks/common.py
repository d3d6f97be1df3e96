"""Shared pieces of the benchmarks: data, timing, memory, and the result each one writes.

Every benchmark is a module run from the repository root (``python -m benchmarks.NAME
--out FILE [--quick]``); it prints what it measures and writes a JSON result that
``run_all.py`` turns into a section of docs/benchmarks.md:
``{"title", "markdown", "targets": [{"name", "measured", "met"}], "data"}``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
# No usage reporting from the peers under test, set before any of them is imported.
for _name, _value in (("WHYLOGS_NO_ANALYTICS", "True"), ("DO_NOT_TRACK", "1"),
                      ("EVIDENTLY_DISABLE_TELEMETRY", "1"), ("ITERATIVE_DO_NOT_TRACK", "1")):
    os.environ.setdefault(_name, _value)
N_NUMERIC, N_CATEGORICAL = 15, 5
CATEGORIES = [f"c{i}" for i in range(12)]


def training_data(n_numeric: int = N_NUMERIC, n_categorical: int = N_CATEGORICAL, rows: int = 20_000,
                  seed: int = 7) -> pd.DataFrame:
    """Synthetic model data: numeric features, categorical features and a ``price`` prediction."""
    rng = np.random.default_rng(seed)
    data = {f"num{i}": rng.normal(i, 1 + i / 10, rows) for i in range(n_numeric)}
    data.update({f"cat{i}": rng.choice(CATEGORIES, rows) for i in range(n_categorical)})
    data["price"] = rng.lognormal(12, 0.4, rows)
    return pd.DataFrame(data)


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and predictions of a frame made by ``training_data``."""
    return frame.drop(columns="price"), frame["price"].to_numpy()


def rows_of(frame: pd.DataFrame) -> tuple[list[dict], list[float]]:
    """One dict of Python values per row, as a service receives them, and the predictions."""
    features, predictions = split(frame)
    return features.to_dict("records"), predictions.tolist()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


MIN_SAMPLE_SECONDS = 0.1


def interleaved(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Median seconds per item of each contender, run in turn round after round after a warm-up.

    ``contenders`` maps a name to (a call doing the work once, the items it processes). A
    sample repeats a call that the warm-up found short for about ``MIN_SAMPLE_SECONDS``, so
    a millisecond call is judged over many calls, not by one timer reading.
    """
    repeats = {name: max(1, round(MIN_SAMPLE_SECONDS / seconds(fn))) for name, (fn, _) in contenders.items()}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (fn, items) in contenders.items():
            samples[name].append(seconds(lambda: [fn() for _ in range(repeats[name])]) / repeats[name] / items)
    return {name: statistics.median(values) for name, values in samples.items()}


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Memory fields of /proc/<pid>/status in bytes (VmRSS, VmHWM, ...)."""
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def mib(n_bytes: float) -> float:
    return n_bytes / (1024 * 1024)


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def target(name: str, measured: str, met: bool | None) -> dict:
    """One target line; ``met`` is None when this run cannot decide it (``--quick``)."""
    return {"name": name, "measured": measured, "met": met}


def arguments(doc: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller sizes")
    return parser.parse_args()


def write_result(args: argparse.Namespace, title: str, markdown: str, targets: list[dict], data: dict) -> None:
    print(f"\n## {title}\n\n{markdown}\n")
    for t in targets:
        print(f"target {'met' if t['met'] else 'MISSED' if t['met'] is False else 'n/a'}: {t['name']}: {t['measured']}")
    if args.out:
        result = {"title": title, "markdown": markdown, "targets": targets, "data": data}
        args.out.write_text(json.dumps(result, indent=2))
