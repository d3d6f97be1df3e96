"""Batch cost per value: a window of 1,000 and of 100,000 rows, 20 features and one prediction.

Contenders, run in turn on the same window against the same 20,000-row reference:
- modelmon ``observe_batch(frame, predictions)`` (counts against the reference profile), given
  the DataFrame and, for comparison, a mapping of column name to numpy array;
- whylogs ``why.log(frame)`` (profiles the window);
- Evidently ``Report([DataDriftPreset()]).run(window, reference)`` (the drift tests);
- alibi-detect ``KSDrift(reference).predict(window)`` (a KS test per column).

What each is handed is prepared outside the timing: the reference ``Dataset`` of Evidently,
the detector of alibi-detect (built on the reference), and its float matrix of the window
(categories as integer codes: KSDrift takes numbers only).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from benchmarks.common import arguments, interleaved, split, table, target, training_data, write_result
from modelmon import ModelMonitor, Reference

import whylogs as why  # noqa: E402  (after benchmarks.common turned usage reporting off)
from alibi_detect.cd import KSDrift  # noqa: E402
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

VALUES_PER_ROW = 21


def as_numbers(frame: pd.DataFrame) -> np.ndarray:
    """The frame as float32, categories ("c7") as their integer codes."""
    return frame.apply(lambda col: col.str[1:].astype(int) if col.dtype == object else col).to_numpy(np.float32)


def main() -> None:
    args = arguments(__doc__)
    warnings.simplefilter("ignore")
    logging.getLogger("alibi_detect").setLevel(logging.ERROR)
    reference = training_data()
    ref = Reference.from_data(reference, model="m", version="1", prediction="price")
    monitor = ModelMonitor("m", "1", ref, registry=CollectorRegistry())
    definition = DataDefinition(
        numerical_columns=[c for c in reference if reference[c].dtype != object],
        categorical_columns=[c for c in reference if reference[c].dtype == object],
    )
    evidently_reference = Dataset.from_pandas(reference, data_definition=definition)
    detector = KSDrift(as_numbers(reference), p_val=0.05)

    def contenders(window: pd.DataFrame) -> dict:
        features, predictions = split(window)
        columns = {name: column.to_numpy() for name, column in features.items()}
        matrix, values = as_numbers(window), len(window) * VALUES_PER_ROW
        return {
            "modelmon observe_batch": (lambda: monitor.observe_batch(features, predictions), values),
            "modelmon observe_batch, mapping of arrays": (lambda: monitor.observe_batch(columns, predictions), values),
            "whylogs why.log(frame)": (lambda: why.log(window), values),
            "Evidently DataDriftPreset": (
                lambda: Report([DataDriftPreset()]).run(
                    Dataset.from_pandas(window, data_definition=definition), evidently_reference),
                values),
            "alibi-detect KSDrift": (lambda: detector.predict(matrix), values),
        }

    sizes = (1000, 10_000) if args.quick else (1000, 100_000)
    results, rows_md, targets = {}, [], []
    for n in sizes:
        rounds = 3 if args.quick or n > 10_000 else 7
        per_value = interleaved(contenders(training_data(rows=n, seed=13)), rounds)
        results[n] = per_value
        mm = per_value["modelmon observe_batch"]
        for name, s in per_value.items():
            rows_md.append([f"{n:,}", name, f"{s * 1e6:.4f}", f"{s * n * VALUES_PER_ROW * 1e3:,.1f}",
                            "1" if name == "modelmon observe_batch" else f"{s / mm:,.1f}x"])
        targets.append(target(f"observe_batch under 0.05 us per value ({n:,} rows)", f"{mm * 1e6:.4f} us",
                              mm < 0.05e-6))
        for peer in ("whylogs why.log(frame)", "alibi-detect KSDrift"):
            ratio = per_value[peer] / mm
            targets.append(target(f"observe_batch at least 10x cheaper than {peer} ({n:,} rows)",
                                  f"{ratio:.1f}x", ratio >= 10))
    markdown = (
        f"Windows of {' and '.join(f'{n:,}' for n in sizes)} rows x 21 values (20 features, one prediction), "
        "the same window for every contender, against the same 20,000-row reference; median of "
        f"{'3' if args.quick else '7 (3 at 100,000 rows)'} interleaved rounds after a warm-up.\n\n"
        + table(["rows", "contender", "us per value", "ms per window", "cost relative to modelmon"], rows_md)
        + "\n\nRatios are to modelmon given the DataFrame. They do different work: modelmon and whylogs "
        "summarise the window (modelmon into counts per reference bin, whylogs into sketches), while "
        "Evidently and alibi-detect run the drift tests themselves. modelmon leaves the drift arithmetic "
        "to Prometheus recording rules, outside the service; those costs are not in this table."
    )
    write_result(args, "Batch cost per value", markdown, targets,
                 {"seconds_per_value": {str(n): v for n, v in results.items()}})


if __name__ == "__main__":
    main()
