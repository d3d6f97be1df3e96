"""Per-row cost: a 20-feature row (15 numeric, 5 categorical) and one prediction.

Contenders, run in turn on the same rows, round after round:
- modelmon ``ModelMonitor.observe(row, prediction)``, and with a ``prediction_id`` (remembered for
  delayed labels in the default in-memory outcome store);
- the same signals with plain prometheus-client ``labels().inc()`` / ``observe()`` per value;
- whylogs ``why.log(row=...)`` (a profile per call, its single-row API);
- whylogs ``DatasetProfile.track(row=...)`` into one long-lived profile (its cheapest per-row path).
"""
from __future__ import annotations

import itertools

from prometheus_client import CollectorRegistry

from benchmarks.bench_observe import plain_prometheus
from benchmarks.common import arguments, interleaved, rows_of, table, target, training_data, write_result
from modelmon import ModelMonitor, Reference

import whylogs as why  # noqa: E402  (after benchmarks.common turned usage reporting off)
from whylogs.core import DatasetProfile  # noqa: E402


def main() -> None:
    args = arguments(__doc__)
    reference = training_data()
    rows, predictions = rows_of(training_data(rows=2000, seed=11))
    ref = Reference.from_data(reference, model="m", version="1", prediction="price")
    monitor = ModelMonitor("m", "1", ref, registry=CollectorRegistry())
    plain = plain_prometheus(ref, CollectorRegistry())
    profile = DatasetProfile()
    whylogs_rows = [{**row, "price": p} for row, p in zip(rows, predictions)]

    def run(record, n):
        def go():
            for row, p in zip(rows[:n], predictions[:n]):
                record(row, p)
        return go, n

    def run_whylogs(record, n):
        def go():
            for row in whylogs_rows[:n]:
                record(row)
        return go, n

    small = 20 if args.quick else 50
    ids = itertools.count()
    monitor_ids = ModelMonitor("m", "1", ref, registry=CollectorRegistry())
    contenders = {
        "modelmon observe": run(monitor.observe, len(rows)),
        "modelmon observe, with prediction_id": run(
            lambda row, p: monitor_ids.observe(row, p, prediction_id=f"p{next(ids)}"), len(rows)),
        "plain prometheus-client": run(plain, len(rows)),
        "whylogs why.log(row=...)": run_whylogs(lambda row: why.log(row=row), small),
        "whylogs DatasetProfile.track(row=...)": run_whylogs(lambda row: profile.track(row=row), small * 10),
    }
    rounds = 3 if args.quick else 9
    per_row = interleaved(contenders, rounds)
    mm = per_row["modelmon observe"]
    rows_md = [[name, f"{s * 1e6:,.2f}", "1" if name == "modelmon observe" else f"{s / mm:,.1f}x"]
               for name, s in per_row.items()]
    markdown = (
        f"A 20-feature row (15 numeric, 5 categorical) plus one numeric prediction; median of {rounds} "
        "interleaved rounds after a warm-up, on the same rows (2,000 per round for modelmon and "
        f"prometheus-client, {small} and {small * 10} for the two whylogs calls).\n\n"
        + table(["contender", "us per row (median)", "cost relative to modelmon"], rows_md)
        + "\n\nRatios are to `observe` without a prediction id, which records the same signals as the "
        "others. The plain prometheus-client baseline records the same series as modelmon, one "
        "`labels(...).inc()` per feature bin and one summary `observe()` per numeric value. "
        "`why.log(row=...)` builds a whole profile (and result set) per call; `track(row=...)` "
        "adds the row to one existing profile, the cheapest way whylogs offers to log row by row."
    )
    ratio_plain = per_row["plain prometheus-client"] / mm
    ratio_why = per_row["whylogs why.log(row=...)"] / mm
    targets = [
        target("observe under 10 us per row", f"{mm * 1e6:.2f} us", mm < 10e-6),
        target("observe at least 5x cheaper than plain prometheus-client", f"{ratio_plain:.1f}x", ratio_plain >= 5),
        target("observe at least 100x cheaper than whylogs single-row logging (why.log(row=...))",
               f"{ratio_why:,.0f}x", ratio_why >= 100),
    ]
    write_result(args, "Per-row cost", markdown, targets, {"seconds_per_row": per_row})


if __name__ == "__main__":
    main()
