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
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import drift
from .bins import CategoricalBins, NumericBins, TextBins
from .event_source import (
    REDACTED,
    EventStats,
    add_source_arguments,
    field_value,
    json_ready,
    logged_value,
    parse_since,
    read_events,
)
from .reference import ColumnProfile, Reference, ReferenceFileError
from .training_csv import read_csv

VERSION_FIELD = "modelmon.version"


@dataclass
class LiveData:
    """Logged values per column (features and outputs), with each row's group."""

    columns: dict[str, list[Any]]
    groups: list[str | None]
    group_field: str
    events: int = 0
    other_models: int = 0
    failed: int = 0
    versions: Counter = field(default_factory=Counter)


def live_data(events: Iterable[Mapping[str, Any]], reference: Reference, group_field: str = VERSION_FIELD) -> LiveData:
    """Collect the reference's columns from events of the reference's model. Failed
    predictions are left out, as the monitor's metrics leave them out: no output, and
    their inputs were never binned."""
    data = LiveData({name: [] for name in (*reference.features, *reference.outputs)}, [], group_field)
    for event in events:
        if event.get("modelmon.model", reference.model) != reference.model:
            data.other_models += 1
            continue
        if event.get("event.outcome") == "failure":
            data.failed += 1
            continue
        data.events += 1
        data.versions[str(event.get("modelmon.version"))] += 1
        for key, names in (("modelmon.inputs", reference.features), ("modelmon.outputs", reference.outputs)):
            logged = event.get(key)
            logged = logged if isinstance(logged, Mapping) else {}
            for name in names:
                data.columns[name].append(logged_value(logged.get(name)))
        group = field_value(event, group_field)
        data.groups.append(None if group is None else str(group))
    return data


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def bin_counts(profile: ColumnProfile, values: Sequence[Any]) -> list[int]:
    """Counts of ``values`` in the profile's bins, with the monitor's own binning."""
    if profile.kind == "categorical":
        return CategoricalBins(profile.categories, [], 0).count_array(values)[0]
    if profile.kind == "text":  # token-count bins; the token tallies after them are left out
        counts = TextBins(profile.edges, profile.vocabulary, [], [], 0, 0).count_array(values)[0]
        return counts[: len(profile.bin_labels)]
    column: Any = values
    if all(_is_number(v) for v in values):
        column = np.asarray(values, dtype=np.float64)
    else:
        column = np.asarray(values, dtype=object)
    return NumericBins(profile.edges, [], [], 0, 0).count_array(column)[0]


def finite(values: Iterable[Any]) -> np.ndarray:
    x = np.asarray([v for v in values if _is_number(v)], dtype=np.float64)
    return x[np.isfinite(x)]


def _group_test(profile: ColumnProfile, values: list[Any],
                groups: list[str | None]) -> tuple[drift.TestResult | None, dict[str, int]]:
    """The test across groups (versions or segments) with enough values, and every group's size."""
    by_group: dict[str, list[Any]] = {}
    for value, group in zip(values, groups):
        if group is not None:
            by_group.setdefault(group, []).append(value)
    if profile.kind == "numeric":
        samples: dict[str, Any] = {g: finite(v) for g, v in sorted(by_group.items())}
    else:
        samples = dict(sorted(by_group.items()))
    sizes = {g: len(s) for g, s in samples.items()}
    tested = {g: s for g, s in samples.items() if len(s) >= drift.MIN_SAMPLE}
    if len(tested) < 2:
        return None, sizes
    if profile.kind == "numeric":
        return drift.kruskal(list(tested.values())), sizes
    table = np.array([bin_counts(profile, s) for s in tested.values()])
    if (table.sum(axis=0) > 0).sum() < 2:
        return None, sizes
    return drift.independence(table), sizes


def analyse_column(name: str, role: str, profile: ColumnProfile, reference_rows: int, values: list[Any],
                   groups: list[str | None], training: np.ndarray | None) -> dict[str, Any]:
    """The tests of one column; p-values are adjusted later, over the whole report."""
    redacted = sum(v is REDACTED for v in values)
    if redacted:
        keep = [i for i, v in enumerate(values) if v is not REDACTED]
        values, groups = [values[i] for i in keep], [groups[i] for i in keep]
    counts = bin_counts(profile, values)
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
        if training is None:
            reason = "no raw training values (--training)"
        elif training.dtype.kind != "f":
            reason = "the training column is not numeric"
        else:
            reference_values, live_values = training[np.isfinite(training)], finite(values)
            raw = min(len(reference_values), len(live_values)) >= drift.MIN_SAMPLE
            reason = f"fewer than {drift.MIN_SAMPLE} finite values"
        if raw:
            tests += drift.numeric_tests(reference_values, live_values, profile.stddev)
            column["comparison"] = "raw training values"
        else:
            column["notes"].append(f"{reason}: Kolmogorov-Smirnov on the reference bins (D at the bin edges, "
                                   "a lower bound) and chi-square on the bins; Wasserstein not run")
            order = [len(labels) - 4, *range(len(labels) - 4), len(labels) - 3]  # below, in-range bins, above
            if sum(counts[i] for i in order) and sum(shares[i] for i in order):
                tests.append(drift.binned_ks([counts[i] for i in order], [shares[i] for i in order]))
    elif profile.kind == "text":
        column["notes"].append("text: compared on the reference's token-count bins")
    tests += drift.binned_tests(counts, shares, reference_rows, chi_square=not raw)
    group_test, sizes = _group_test(profile, values, groups)
    column["tests"] = tests
    column["groups"] = {"sizes": sizes, "test": group_test}
    return column


def analyse(reference: Reference, live: LiveData, training: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict: one entry per column, p-values BH-adjusted together."""
    training = training or {}
    columns = []
    for role, profiles in (("feature", reference.features), ("output", reference.outputs)):
        for name, profile in profiles.items():
            columns.append(analyse_column(name, role, profile, reference.rows, live.columns[name], live.groups,
                                          training.get(name)))
    results = [t for c in columns for t in c["tests"]]
    results += [c["groups"]["test"] for c in columns if c["groups"] and c["groups"]["test"]]
    drift.adjust(results)
    for column in columns:
        column["drift"] = drift.drifts(column["tests"])
        column["tests"] = [t.to_dict() for t in column["tests"]]
        groups = column["groups"]
        if groups is not None:
            test = groups["test"]
            groups.update(field=live.group_field, differs=bool(test and drift.drifts([test])),
                          test=test.to_dict() if test else None)
    return {
        "model": reference.model,
        "reference": {"version": reference.version, "hash": reference.hash, "rows": reference.rows,
                      "trained_at": reference.trained_at.isoformat()},
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "events": {"read": live.events, "failed_left_out": live.failed, "other_models": live.other_models,
                   "versions": dict(live.versions)},
        "method": {
            "rule": "a column drifts when an effect size reaches its threshold and one of its tests is "
                    f"significant at {drift.ALPHA} after the {drift.CORRECTION} correction over the whole report",
            "correction": drift.CORRECTION, "alpha": drift.ALPHA, "thresholds": dict(drift.THRESHOLDS),
            "share_floor": drift.SHARE_FLOOR, "min_sample": drift.MIN_SAMPLE,
        },
        "columns": columns,
        "drifting": [c["name"] for c in columns if c["drift"]],
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
    training = read_csv(Path(args.training)) if args.training else None
    stats = EventStats()
    events = read_events(args.events, since=parse_since(args.since), stats=stats, index=args.es_index)
    live = live_data(events, reference, args.segment or VERSION_FIELD)
    if live.events == 0:
        raise ValueError(f"{args.events}: no prediction events of model {reference.model!r}"
                         + (f" since {args.since}" if args.since else ""))
    report = analyse(reference, live, training)
    report["events"].update(source=args.events, since=args.since, malformed=stats.malformed,
                            before_since=stats.before_since)
    json_path, html_path = write(report, args.output)
    drifting = report["drifting"]
    print(f"wrote {json_path} and {html_path}: {len(report['columns'])} columns, {live.events} events, "
          f"{len(drifting)} drifting{': ' + ', '.join(drifting) if drifting else ''}")
    return 1 if drifting and args.fail_on_drift else 0


def add_parser(commands: Any) -> None:
    """Register ``modelmon report``."""
    p = commands.add_parser("report", help="drift report (JSON and HTML) of logged predictions against the reference",
                            description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="reference profile YAML")
    p.add_argument("--events", required=True, help="event file, directory of event files, or Elasticsearch URL")
    p.add_argument("--training", help="training CSV: raw values for Kolmogorov-Smirnov and Wasserstein")
    p.add_argument("--segment", help=f"event field to compare groups by (default: {VERSION_FIELD}); "
                                     "e.g. labels.region or an input feature")
    add_source_arguments(p)
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 if any column drifts")
    p.add_argument("-o", "--output", required=True, help="output path: writes OUTPUT.json and OUTPUT.html")
    p.set_defaults(run=run)
