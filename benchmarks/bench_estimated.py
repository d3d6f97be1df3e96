"""Cost of the estimated quality (issue 15) in the hot path: a 20-feature row (15 numeric,
5 categorical) and a class label, observed without and with class probabilities.

Contenders, run in turn on the same rows, round after round, each on its own monitor of
the same calibrated reference:
- ``observe(row, label)``: no probabilities (the estimated counters stay untouched);
- ``observe(row, label, probabilities={"no": p0, "yes": p1})``: binary, a mapping;
- ``observe(row, label, probabilities=(p0, p1))``: binary, a sequence in class order;
- ``observe(row, label, probabilities={5 classes})``: multiclass;
- ``observe_batch`` of 2,000 rows with and without an n x k probability array (per row).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from benchmarks.common import arguments, interleaved, rows_of, table, target, training_data, write_result
from modelmon import ModelMonitor, Reference

CLASSES5 = [f"c{i}" for i in range(5)]


def references(rng: np.random.Generator) -> tuple[Reference, Reference]:
    train = training_data(rows=5000).drop(columns="price")
    q = rng.uniform(0, 1, 2000)
    binary = Reference.from_data(
        train.assign(label=rng.choice(["no", "yes"], len(train))), model="m", version="1", prediction="label",
        holdout={"y": np.where(rng.uniform(0, 1, q.size) < q, "yes", "no"), "p_no": 1 - q, "p_yes": q},
        target="y", probabilities=["p_no", "p_yes"])
    p = rng.dirichlet(np.ones(5), 2000)
    actual = np.array([rng.choice(CLASSES5, p=row) for row in p])
    multi = Reference.from_data(
        train.assign(label=rng.choice(CLASSES5, len(train))), model="m", version="1", prediction="label",
        holdout={"y": actual, **{f"p_{c}": p[:, j] for j, c in enumerate(CLASSES5)}},
        target="y", probabilities=[f"p_{c}" for c in CLASSES5])
    return binary, multi


def main() -> None:
    args = arguments(__doc__)
    rng = np.random.default_rng(5)
    binary, multi = references(rng)
    serving = training_data(rows=2000, seed=11)
    rows, _ = rows_of(serving)
    q = rng.uniform(0, 1, len(rows))
    labels = np.where(q > 0.5, "yes", "no")
    as_dicts = [{"no": 1 - p, "yes": p} for p in q.tolist()]
    as_tuples = [(1 - p, p) for p in q.tolist()]
    p5 = rng.dirichlet(np.ones(5), len(rows))
    labels5 = np.array(CLASSES5)[p5.argmax(axis=1)].tolist()
    dicts5 = [dict(zip(CLASSES5, row)) for row in p5.tolist()]
    frame = serving.drop(columns="price")
    matrix = np.column_stack([1 - q, q])

    def monitor(ref):
        return ModelMonitor("m", "1", ref, registry=CollectorRegistry())

    def rows_of_calls(ref, label_list, probabilities=None):
        m = monitor(ref)
        label_list = list(label_list)
        if probabilities is None:
            def go():
                for row, label in zip(rows, label_list):
                    m.observe(row, label)
        else:
            def go():
                for row, label, p in zip(rows, label_list, probabilities):
                    m.observe(row, label, probabilities=p)
        return go, len(rows)

    def batch(ref, probabilities=None):
        m = monitor(ref)
        return (lambda: m.observe_batch(frame, labels, probabilities=probabilities)), len(rows)

    contenders = {
        "observe, no probabilities": rows_of_calls(binary, labels.tolist()),
        "observe, binary probabilities (mapping)": rows_of_calls(binary, labels.tolist(), as_dicts),
        "observe, binary probabilities (tuple)": rows_of_calls(binary, labels.tolist(), as_tuples),
        "observe, 5-class probabilities (mapping)": rows_of_calls(multi, labels5, dicts5),
        "observe_batch, no probabilities": batch(binary),
        "observe_batch, binary probability array": batch(binary, matrix),
    }
    rounds = 3 if args.quick else 9
    per_row = interleaved(contenders, rounds)
    base = per_row["observe, no probabilities"]
    base_batch = per_row["observe_batch, no probabilities"]
    rows_md = []
    for name, s in per_row.items():
        reference = base_batch if name.startswith("observe_batch") else base
        rows_md.append([name, f"{s * 1e6:,.3f}", f"{(s - reference) * 1e6:+,.3f}"])
    markdown = (
        f"A 20-feature row (15 numeric, 5 categorical) and a class label; median of {rounds} interleaved rounds "
        f"after a warm-up, {len(rows):,} rows per round.\n\n"
        + table(["contender", "us per row (median)", "added by the probabilities, us per row"], rows_md)
        + "\n\nWith probabilities a row is also mapped through the reference's calibration (one bisection "
        "per calibrated class) and adds its expected outcome to plain float sums under the lock "
        "observe already takes; the counters are folded at flush."
    )
    added = per_row["observe, binary probabilities (mapping)"] - base
    targets = [
        target("binary probabilities add under 1.5 us per row to observe", f"{added * 1e6:.2f} us", added < 1.5e-6),
    ]
    write_result(args, "Estimated quality: cost per row", markdown, targets, {"seconds_per_row": per_row})


if __name__ == "__main__":
    main()
