"""``modelmon report``: a drift report of logged predictions against the reference.

For every feature and output of the reference profile, the live values logged in the
prediction events are compared with the training data by the tests that fit the
column (see ``modelmon.drift`` for the tests, effect sizes and thresholds):

- numeric, with ``--training``: Kolmogorov-Smirnov and Wasserstein on raw values;
  without it, the chi-square test on the reference bins stands in (and the report says so);
- categorical: chi-square goodness of fit of the live counts against the reference shares;
- every column: PSI and Jensen-Shannon on the reference bins, as the Prometheus rules;
- across model versions (or ``--segment`` groups): Kruskal-Wallis for numeric columns,
  chi-square of independence for categorical ones.

Writes ``<output>.json`` and a self-contained ``<output>.html`` (inline SVG, no scripts).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..serving.bins import ABOVE, BELOW, INVALID, MISSING, UNSEEN
from ..serving.reference import ColumnProfile, Reference, ReferenceFileError
from . import drift, event_source
from .event_source import EventStats, add_source_arguments, json_ready, parse_since, read_events
from .live import MAX_SEGMENTS, OTHER_SEGMENT, REPORT_FIELDS, SAMPLE_SEED, SAMPLE_SIZE, VERSION_FIELD, Live, LiveData
from .training_csv import read_csv


def _group_test(profile: ColumnProfile, name: str, live: Live) -> tuple[drift.TestResult | None, dict[str, int]]:
    """The test across groups (versions or segments) with enough values, and every group's size."""
    order = sorted(range(len(live.segments)), key=lambda g: live.segments[g])
    if profile.kind == "numeric" and live.raw_values:
        finite_counts = live.group_finite.get(name, [])
        sizes = {live.segments[g]: (finite_counts[g] if g < len(finite_counts) else 0) for g in order}
        samples = {live.segments[g]: live.sample_values(name, g) for g in order}
        tested = {g: s for g, s in samples.items() if len(s) >= drift.MIN_SAMPLE}
        if len(tested) < 2:
            return None, sizes
        return drift.kruskal(list(tested.values())), sizes
    per_group = live.group_counts.get(name, [])
    tables = {live.segments[g]: per_group[g] for g in order if g < len(per_group)}
    sizes = {g: int(t.sum()) for g, t in tables.items()}
    for g in order:
        sizes.setdefault(live.segments[g], 0)
    tested = [t for g, t in tables.items() if t.sum() >= drift.MIN_SAMPLE]
    if len(tested) < 2:
        return None, sizes
    table = np.array(tested)
    if (table.sum(axis=0) > 0).sum() < 2:
        return None, sizes
    return drift.independence(table), sizes


SPECIAL_SHARES = (("missing", (MISSING,)), ("unseen", (UNSEEN,)), ("out_of_range", (BELOW, ABOVE)),
                  ("invalid", (INVALID,)))


def special_shares(profile: ColumnProfile, counts: Sequence[float], n: float) -> dict[str, dict[str, float]]:
    """Live and reference shares of the special bins, and the excess, as the recording rules'
    missing / unseen / out_of_range share and excess."""
    labels = profile.bin_labels
    out = {}
    for key, bins in SPECIAL_SHARES:
        present = [labels.index(b) for b in bins if b in labels]
        if present:
            live_share = sum(counts[i] for i in present) / n if n else 0.0
            reference_share = sum(profile.shares[labels[i]] for i in present)
            out[key] = {"live": live_share, "reference": reference_share, "excess": live_share - reference_share}
    return out


def analyse_column(name: str, role: str, profile: ColumnProfile, reference_rows: int, live: Live,
                   training: np.ndarray | None) -> dict[str, Any]:
    """The tests of one column; p-values are adjusted later, over the whole report."""
    redacted = live.redacted[name]
    counts = live.counts[name].tolist()
    n = int(sum(counts))
    labels = profile.bin_labels
    column: dict[str, Any] = {
        "name": name, "role": role, "kind": profile.kind, "n": n, "redacted": redacted,
        "bins": [{"label": label, "reference": profile.shares[label], "live": (c / n if n else 0.0), "count": c}
                 for label, c in zip(labels, counts)],
        "comparison": "reference bins", "tests": [], "groups": None, "notes": [],
    }
    if redacted:
        column["notes"].append(f"{redacted} redacted values (masked or hashed) left out")
    if n < drift.MIN_SAMPLE:
        column["notes"].append(f"not tested: {n} live values, fewer than {drift.MIN_SAMPLE}")
        return column
    tests: list[drift.TestResult] = []
    shares = [profile.shares[label] for label in labels]
    raw = False
    if profile.kind == "numeric":
        if not live.raw_values:
            reason = "bin counts only (Prometheus), raw-value tests not run"
        elif training is None:
            reason = "no raw training values (--training)"
        elif training.dtype.kind != "f":
            reason = "the training column is not numeric"
        else:
            reference_values, live_values = training[np.isfinite(training)], live.sample_values(name)
            raw = min(len(reference_values), len(live_values)) >= drift.MIN_SAMPLE
            reason = f"fewer than {drift.MIN_SAMPLE} finite values"
        if raw:
            tests += drift.numeric_tests(reference_values, live_values, profile.stddev)
            column["comparison"] = "raw training values"
            finite_total = sum(live.group_finite.get(name, [])) or len(live_values)
            column["sample_n"] = len(live_values)
            if live.offered > live.sample_size:
                column["notes"].append(f"Kolmogorov-Smirnov and Wasserstein on a uniform sample of {len(live_values)} "
                                       f"of the {finite_total} finite live values")
        else:
            column["notes"].append(f"{reason}: Kolmogorov-Smirnov on the reference bins (D at the bin edges, "
                                   "a lower bound) and chi-square on the bins; Wasserstein not run")
            order = [len(labels) - 4, *range(len(labels) - 4), len(labels) - 3]  # below, in-range bins, above
            if sum(counts[i] for i in order) and sum(shares[i] for i in order):
                tests.append(drift.binned_ks([counts[i] for i in order], [shares[i] for i in order], reference_rows))
    elif profile.kind == "text":
        column["notes"].append("text: compared on the reference's token-count bins")
    tests += drift.binned_tests(counts, shares, reference_rows, chi_square=not raw)
    column["special_shares"] = special_shares(profile, counts, n)
    group_test, sizes = _group_test(profile, name, live)
    column["tests"] = tests
    column["groups"] = {"sizes": sizes, "test": group_test}
    return column


def analyse(reference: Reference, live: Live | LiveData,
            training: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict: one entry per column, p-values BH-adjusted together."""
    if isinstance(live, LiveData):
        live = Live.from_data(reference, live)
    training = training or {}
    columns = []
    for role, profiles in (("feature", reference.features), ("output", reference.outputs)):
        for name, profile in profiles.items():
            columns.append(analyse_column(name, role, profile, reference.rows, live, training.get(name)))
    return finish(reference, columns, live.group_field, {
        "read": live.events, "failed_left_out": live.failed, "other_models": live.other_models,
        "versions": dict(live.versions)}, sample={
        "size": live.sample_size, "rows": live.sampled_rows, "of_rows": live.offered, "seed": SAMPLE_SEED,
        "method": "uniform reservoir sample (algorithm R) of the rows, for Kolmogorov-Smirnov, Wasserstein "
                  "and Kruskal-Wallis; bin counts are over every row"},
        segments={"max": live.max_segments, "kept": len([s for s in live.segments if s != OTHER_SEGMENT]),
                  "lumped_rows": live.lumped, "other": OTHER_SEGMENT})


def finish(reference: Reference, columns: list[dict[str, Any]], group_field: str, events: dict[str, Any],
           **extra: Any) -> dict[str, Any]:
    """Adjust the p-values over the report, decide each column and assemble the report."""
    results = [t for c in columns for t in c["tests"]]
    results += [c["groups"]["test"] for c in columns if c["groups"] and c["groups"]["test"]]
    drift.adjust(results)
    bounded = drift.bound(results)
    for column in columns:
        column["drift"] = drift.drifts(column["tests"])
        column["verdict"] = drift.verdict(column["tests"])
        if column["verdict"] == drift.TOO_FEW:
            column["notes"].append("too few rows to call: an effect's interval reaches its threshold "
                                   "without its lower end doing so (more live, or training, rows would narrow it)")
        column["tests"] = [t.to_dict() for t in column["tests"]]
        groups = column["groups"]
        if groups is not None:
            test = groups["test"]
            groups.update(field=group_field, differs=bool(test and drift.drifts([test])),
                          test=test.to_dict() if test else None)
    return {
        "model": reference.model,
        "reference": {"version": reference.version, "hash": reference.hash, "rows": reference.rows,
                      "trained_at": reference.trained_at.isoformat()},
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "events": events,
        "method": {
            "rule": "a column drifts when the lower end of an effect size's interval (simultaneous at "
                    f"{drift.CONFIDENCE:.0%} over the report) reaches its threshold and one of its tests is "
                    f"significant at {drift.ALPHA} after the {drift.CORRECTION} correction over the whole report",
            "correction": drift.CORRECTION, "alpha": drift.ALPHA, "thresholds": dict(drift.THRESHOLDS),
            "share_floor": drift.SHARE_FLOOR, "min_sample": drift.MIN_SAMPLE, "confidence": drift.CONFIDENCE,
            "intervals": f"simultaneous at {drift.CONFIDENCE:.0%} over the report's {bounded} thresholded effects "
                         f"(Bonferroni: each at {1 - (1 - drift.CONFIDENCE) / max(bounded, 1):.4g})",
        },
        **extra,
        "columns": columns,
        "drifting": [c["name"] for c in columns if c["drift"]],
        "too_few_to_call": [c["name"] for c in columns if c.get("verdict") == drift.TOO_FEW],
    }


def output_paths(output: str) -> tuple[Path, Path]:
    """``report`` -> report.json, report.html; an existing directory gets both inside."""
    path = Path(output)
    if path.is_dir():
        path = path / "report"
    elif path.suffix in (".json", ".html"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".html")


def write(report: Mapping[str, Any], output: str) -> tuple[Path, Path]:
    from .report_html import render

    json_path, html_path = output_paths(output)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html_path.write_text(render(report), encoding="utf-8")
    return json_path, html_path


def run(args: argparse.Namespace) -> int:
    drift.require_scipy()
    try:
        reference = Reference.load(args.reference)
    except ReferenceFileError as exc:
        raise ValueError(str(exc)) from None
    if bool(args.events) == bool(args.prometheus):
        raise ValueError("give --events (event files or Elasticsearch) or --prometheus (bin counts), one of them")
    if args.prometheus:
        return run_prometheus(args, reference)
    training = read_csv(Path(args.training)) if args.training else None
    # from Elasticsearch, only the fields the report reads (half the bytes of a whole event)
    fields = [*REPORT_FIELDS, args.segment] if args.segment else list(REPORT_FIELDS)
    slices = args.es_slices or event_source.ES_SLICES
    jobs = min(slices, os.cpu_count() or 1) if args.jobs is None else args.jobs
    if jobs < 1:
        raise ValueError(f"--jobs: expected at least 1, got {jobs}")
    options = {"sample_size": args.sample_size, "max_segments": args.max_segments}
    group_field, since = args.segment or VERSION_FIELD, parse_since(args.since)
    progress = Progress(EventStats()) if sys.stderr.isatty() else None
    if jobs > 1:
        from .parallel import fold_in_processes, shares

        with shares(args.events, jobs, since=since, index=args.es_index, fields=fields, slices=slices) as parts:
            live, stats = fold_in_processes(reference, group_field, parts, options)
    else:
        stats = EventStats()
        events = read_events(args.events, since=since, stats=stats, index=args.es_index, fields=fields, slices=slices)
        live = Live(reference, group_field, **options)
        if progress is not None:
            progress.stats = stats
        # What exists now (modules, reference, training data) outlives the read: out of the collector's
        # full passes, which the millions of event dicts set off (a fifth of the CPU from Elasticsearch)
        gc.freeze()
        try:
            live.add_all(events, progress)
        finally:
            gc.unfreeze()
    if progress is not None:
        progress.close(live.events)
    if live.events == 0:
        raise ValueError(f"{args.events}: no prediction events of model {reference.model!r}"
                         + (f" since {args.since}" if args.since else ""))
    report = analyse(reference, live, training)
    if live.lumped:
        report.setdefault("notes", []).append(
            f"{args.segment or VERSION_FIELD}: more than {live.max_segments} segments; {live.lumped} rows of the "
            f"others counted together as {OTHER_SEGMENT}")
    report["events"].update(source=args.events, since=args.since, malformed=stats.malformed,
                            before_since=stats.before_since)
    json_path, html_path = write(report, args.output)
    drifting = report["drifting"]
    print(f"wrote {json_path} and {html_path}: {len(report['columns'])} columns, {live.events} events, "
          f"{len(drifting)} drifting{': ' + ', '.join(drifting) if drifting else ''}")
    return 1 if drifting and args.fail_on_drift else 0


def run_prometheus(args: argparse.Namespace, reference: Reference) -> int:
    """The binned tests from the exported bin counters over the window, fleet-wide."""
    from .prometheus_source import fill, read_counts

    counts = read_counts(args.prometheus, reference, args.since, args.until)
    live = Live(reference, VERSION_FIELD, sample_size=0, max_segments=args.max_segments)
    notes = fill(live, counts)
    if live.events == 0:
        raise ValueError(f"{args.prometheus}: no bin counts of model {reference.model!r} over {args.since} "
                         f"to {counts.end.isoformat(timespec='seconds')}")
    report = analyse(reference, live)
    del report["sample"]
    report["events"].update(source=args.prometheus, since=args.since, kind="prometheus",
                            start=counts.start.isoformat(timespec="seconds"),
                            end=counts.end.isoformat(timespec="seconds"), window_seconds=counts.window_seconds,
                            queries=counts.queries,
                            counts="increase() over the window, extrapolated towards its edges as in the recording "
                                   "rules: n can exceed the rows counted by up to a scrape interval's worth at each "
                                   "end (noticeable only when the counters are young)")
    report["notes"] = notes + ["bin counts from Prometheus: PSI, chi-square, binned Kolmogorov-Smirnov, "
                               "Jensen-Shannon and the special bins' shares; the raw-value tests (Kolmogorov-Smirnov "
                               "and Wasserstein on values, Kruskal-Wallis) not run: they need --events"]
    json_path, html_path = write(report, args.output)
    drifting = report["drifting"]
    print(f"wrote {json_path} and {html_path}: {len(report['columns'])} columns, {live.events} rows over "
          f"{counts.window_seconds}s, {len(drifting)} drifting{': ' + ', '.join(drifting) if drifting else ''}")
    return 1 if drifting and args.fail_on_drift else 0


class Progress:
    """A one-line progress report on stderr (a terminal only): events, rate, share of the bytes."""

    def __init__(self, stats: EventStats, every: float = 0.5):
        self.stats, self.every = stats, every
        self.started = self.shown = time.monotonic()

    def update(self, events: int) -> None:
        now = time.monotonic()
        if now - self.shown < self.every:
            return
        self.shown = now
        rate = events / max(now - self.started, 1e-9)
        line = f"\rmodelmon report: {events:,} events, {rate:,.0f}/s"
        if self.stats.bytes_total:
            done = self.stats.bytes_read / self.stats.bytes_total
            left = (now - self.started) * (1 - done) / done if done else 0
            width = 30
            line += f" [{'#' * int(done * width):<{width}}] {done:.0%}, {left:.0f}s left"
        sys.stderr.write(line + "   ")
        sys.stderr.flush()

    def close(self, events: int) -> None:
        seconds = time.monotonic() - self.started
        sys.stderr.write(f"\rmodelmon report: {events:,} events in {seconds:.1f}s" + " " * 40 + "\n")
        sys.stderr.flush()


def add_parser(commands: Any) -> None:
    """Register ``modelmon report``."""
    p = commands.add_parser("report", help="drift report (JSON and HTML) of logged predictions against the reference",
                            description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="reference profile YAML")
    p.add_argument("--events", help="event file, directory of event files, or Elasticsearch URL")
    p.add_argument("--prometheus", metavar="URL",
                   help="Prometheus (or Thanos, Mimir) URL: the binned tests from the bin counters over --since, "
                        "fleet-wide; bearer token from $PROMETHEUS_TOKEN")
    p.add_argument("--until", help="with --prometheus: the window's end, a Unix or ISO 8601 time (default now)")
    p.add_argument("--training", help="training CSV: raw values for Kolmogorov-Smirnov and Wasserstein")
    p.add_argument("--segment", help=f"event field to compare groups by (default: {VERSION_FIELD}); "
                                     "e.g. labels.region or an input feature")
    add_source_arguments(p)
    p.add_argument("--es-slices", type=int, help="parallel slices of the Elasticsearch point in time (default 4; "
                                                 "1 when the client and the cluster share few cores)")
    p.add_argument("--jobs", type=int,
                   help="processes that read and fold the events, each a share of the event files or of the "
                        "slices (default: the slices or the CPUs, the fewer); 1: all in this process")
    p.add_argument("--sample-size", type=int, default=SAMPLE_SIZE,
                   help=f"live rows kept, a uniform sample, for the raw-value tests (default {SAMPLE_SIZE:,})")
    p.add_argument("--max-segments", type=int, default=MAX_SEGMENTS,
                   help=f"segments kept apart (default {MAX_SEGMENTS}); rows of the others are counted together")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 if any column drifts")
    p.add_argument("-o", "--output", required=True, help="output path: writes OUTPUT.json and OUTPUT.html")
    p.set_defaults(run=run)
