"""``modelmon skew``: do training and serving compute the same feature values?

Joins the training rows to the logged serving inputs on an id and reports, per
feature, the share of joined rows whose values differ: numbers beyond a relative and
absolute tolerance (``math.isclose``), anything else by its category text, a value
present on one side and missing on the other. The table also gives the median
serving/training ratio of the differing numbers (a unit change shows as a constant
factor) and the largest difference. Exits 1 when a feature's share is above
``--max-mismatch``, so it can gate CI or run from cron.

With ``--no-id`` (no shared id), each feature's distributions are compared instead:
Kolmogorov-Smirnov and Wasserstein for numbers, chi-square of independence for
categories, flagged on the effect-size thresholds of ``modelmon.drift``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import drift
from ..serving.bins import category_key
from .event_source import (
    REDACTED,
    add_source_arguments,
    event_time,
    field_value,
    json_ready,
    logged_value,
    parse_since,
    read_events,
)
from .training_csv import NA_VALUES

INPUTS = "modelmon.inputs"
EVENT_ID = "event.id"


@dataclass
class Training:
    """A training CSV: the id of each row and its feature columns, parsed as ``read_csv``
    does (a column is numeric when every non-missing cell is a number)."""

    ids: list[str]
    columns: dict[str, list[Any]]
    numeric: set[str]


def read_training(path: Path, id_column: str | None) -> Training:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        rows = list(reader)
    if id_column is not None and id_column not in header:
        raise ValueError(f"{path}: no id column {id_column!r} (columns: {', '.join(header[:10])}...)")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} cells, the header has {len(header)}")
    columns: dict[str, list[Any]] = {}
    numeric = set()
    for i, name in enumerate(header):
        cells = [None if row[i] in NA_VALUES else row[i] for row in rows]
        if name == id_column:
            continue
        try:
            columns[name] = [math.nan if c is None else float(c) for c in cells]
            numeric.add(name)
        except ValueError:
            columns[name] = cells
    ids = [row[header.index(id_column)].strip() for row in rows] if id_column else []
    return Training(ids, columns, numeric)


def id_key(value: Any) -> str | None:
    """Ids compare as text: strings stripped, integral numbers by their digits."""
    if isinstance(value, str):
        return value.strip()
    key = category_key(value)
    return None if key in (None, "__invalid__") else key


def _number(value: Any) -> float | None:
    """A serving value as a float, None if it is not a number (numeric strings count)."""
    if type(value) in (int, float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass
class FeatureSkew:
    """Mismatches of one feature over the joined rows."""

    name: str
    kind: str
    compared: int = 0
    redacted: int = 0
    kinds: Counter = field(default_factory=Counter)
    differences: list[tuple[float, str, Any, Any]] = field(default_factory=list)
    examples: list[tuple[str, Any, Any]] = field(default_factory=list)
    pairs: Counter = field(default_factory=Counter)

    @property
    def mismatched(self) -> int:
        return sum(self.kinds.values())

    @property
    def share(self) -> float:
        return self.mismatched / self.compared if self.compared else 0.0

    def add(self, row_id: str, training: Any, serving: Any, rtol: float, atol: float) -> None:
        if serving is REDACTED:
            self.redacted += 1
            return
        self.compared += 1
        if _missing(training) or _missing(serving):
            if not (_missing(training) and _missing(serving)):
                self.kinds["missing_at_serving" if _missing(serving) else "missing_in_training"] += 1
                self._example(row_id, training, serving)
            return
        if self.kind == "numeric":
            x = _number(serving)
            if x is None:
                self.kinds["not_a_number"] += 1
                self._example(row_id, training, serving)
            elif not (x == training or math.isclose(x, training, rel_tol=rtol, abs_tol=atol)):
                self.kinds["value"] += 1
                self.differences.append((abs(x - training), row_id, training, x))
        elif category_key(serving) != training:
            self.kinds["value"] += 1
            self._example(row_id, training, serving)

    def _example(self, row_id: str, training: Any, serving: Any) -> None:
        pair = (_show(training), _show(serving))
        self.pairs[pair] += 1
        if len(self.examples) < 100:
            self.examples.append((row_id, *pair))

    def to_dict(self, max_mismatch: float, top: int) -> dict[str, Any]:
        biggest = sorted(self.differences, key=lambda d: (-d[0] if math.isfinite(d[0]) else -math.inf, d[1]))
        largest = [
            {"id": i, "training": t, "serving": s, "abs_diff": d, "rel_diff": d / abs(t) if t else None}
            for d, i, t, s in biggest[:top]
        ]
        largest += [{"id": i, "training": t, "serving": s} for i, t, s in self.examples[: max(0, top - len(largest))]]
        ratios = [s / t for _, _, t, s in self.differences if t and math.isfinite(s / t)]
        return {
            "feature": self.name,
            "kind": self.kind,
            "compared": self.compared,
            "mismatched": self.mismatched,
            "share": self.share,
            "skewed": self.share > max_mismatch,
            "redacted": self.redacted,
            "mismatch_kinds": dict(self.kinds),
            "max_abs_diff": biggest[0][0] if biggest else None,
            "median_ratio": statistics.median(ratios) if ratios else None,
            "largest": largest,
            "common_pairs": [{"training": t, "serving": s, "rows": n} for (t, s), n in self.pairs.most_common(top)],
        }


def _show(value: Any) -> Any:
    return None if _missing(value) else value


def serving_id_field(events: Sequence[Mapping[str, Any]], id_column: str, chosen: str | None) -> str:
    """The event field joined to the training id: ``chosen``, else the input feature of
    the id column's name if any event logged it, else ``event.id``."""
    if chosen:
        return chosen
    logged = any(isinstance(e.get(INPUTS), Mapping) and id_column in e[INPUTS] for e in events)
    return f"{INPUTS}.{id_column}" if logged else EVENT_ID


def latest_by_id(events: Iterable[Mapping[str, Any]], id_field: str) -> tuple[dict[str, Mapping[str, Any]], int]:
    """The newest event of each id, and how many events repeated an id."""
    chosen: dict[str, Mapping[str, Any]] = {}
    duplicates = 0
    for event in events:
        key = id_key(field_value(event, id_field))
        if key is None:
            continue
        if key in chosen:
            duplicates += 1
            old, new = event_time(chosen[key]), event_time(event)
            if old is not None and new is not None and new < old:
                continue
        chosen[key] = event
    return chosen, duplicates


def compare(training: Training, events: Sequence[Mapping[str, Any]], *, id_column: str, id_field: str | None = None,
            features: Sequence[str] | None = None, rtol: float = 1e-6, atol: float = 1e-9,
            max_mismatch: float = 0.01, top: int = 5) -> dict[str, Any]:
    """The skew report of joined training rows and serving events, as a JSON-ready dict."""
    field_name = serving_id_field(events, id_column, id_field)
    serving, duplicates = latest_by_id(events, field_name)
    seen = {name for e in serving.values() if isinstance(e.get(INPUTS), Mapping) for name in e[INPUTS]}
    names = list(features) if features else [n for n in training.columns if n in seen]
    unknown = [n for n in names if n not in training.columns]
    if unknown:
        raise ValueError(f"--features: not training columns: {', '.join(unknown)}")
    skews = {n: FeatureSkew(n, "numeric" if n in training.numeric else "categorical") for n in names}
    joined = 0
    training_ids = set()
    for row, row_id in enumerate(training.ids):
        if row_id in training_ids:
            continue
        training_ids.add(row_id)
        event = serving.get(row_id)
        if event is None:
            continue
        joined += 1
        inputs = event.get(INPUTS)
        inputs = inputs if isinstance(inputs, Mapping) else {}
        for name, skew in skews.items():
            skew.add(row_id, training.columns[name][row], logged_value(inputs.get(name)), rtol, atol)
    if joined == 0:
        raise ValueError(f"no serving event matched a training id: joined {id_column!r} to {field_name!r} "
                         f"({len(serving)} serving ids); choose the field with --serving-id-field")
    results = [s.to_dict(max_mismatch, top) for s in skews.values()]
    return {
        "id_column": id_column,
        "serving_id_field": field_name,
        "tolerance": {"rtol": rtol, "atol": atol},
        "max_mismatch": max_mismatch,
        "rows": {
            "training": len(training.ids),
            "training_distinct_ids": len(training_ids),
            "serving_events": len(events),
            "serving_ids": len(serving),
            "serving_duplicate_ids": duplicates,
            "joined": joined,
        },
        "features": results,
        "skewed": [r["feature"] for r in results if r["skewed"]],
        "not_logged": [n for n in training.columns if n not in seen],
        "not_in_training": sorted(seen - set(training.columns) - {id_column}),
    }


def compare_distributions(training: Training, events: Sequence[Mapping[str, Any]], *,
                          features: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-feature two-sample tests when no id is shared (``--no-id``)."""
    columns: dict[str, list[Any]] = {}
    for event in events:
        inputs = event.get(INPUTS)
        for name, value in (inputs.items() if isinstance(inputs, Mapping) else ()):
            columns.setdefault(name, []).append(logged_value(value))
    names = list(features) if features else [n for n in training.columns if n in columns]
    results = []
    for name in names:
        if name not in training.columns:
            raise ValueError(f"--features: not a training column: {name}")
        serving = [v for v in columns.get(name, []) if v is not REDACTED]
        results.append(_distribution(name, name in training.numeric, training.columns[name], serving))
    drift.adjust([t for _, tests in results for t in tests])
    drift.bound([t for _, tests in results for t in tests])
    out = []
    for entry, tests in results:
        entry.update(tests=[t.to_dict() for t in tests], skewed=drift.drifts(tests), verdict=drift.verdict(tests))
        out.append(entry)
    return {
        "mode": "distributions",
        "rows": {"training": len(next(iter(training.columns.values()), [])), "serving_events": len(events)},
        "method": {"correction": drift.CORRECTION, "alpha": drift.ALPHA, "thresholds": dict(drift.THRESHOLDS)},
        "features": out,
        "skewed": [e["feature"] for e in out if e["skewed"]],
        "too_few_to_call": [e["feature"] for e in out if e["verdict"] == drift.TOO_FEW],
    }


def _distribution(name: str, numeric: bool, training: list[Any], serving: list[Any]) -> tuple[dict[str, Any], list]:
    entry: dict[str, Any] = {"feature": name, "kind": "numeric" if numeric else "categorical"}
    if numeric:
        a = np.asarray(training, dtype=np.float64)
        a = a[np.isfinite(a)]
        b = np.asarray([x for x in map(_number, serving) if x is not None], dtype=np.float64)
        b = b[np.isfinite(b)]
        entry.update(training_n=len(a), serving_n=len(b))
        if min(len(a), len(b)) < drift.MIN_SAMPLE:
            return entry, []
        return entry, drift.numeric_tests(a, b, float(np.std(a, ddof=1)))
    a_keys = Counter("__missing__" if _missing(v) else category_key(v) for v in training)
    b_keys = Counter("__missing__" if _missing(v) else category_key(v) for v in serving)
    entry.update(training_n=sum(a_keys.values()), serving_n=sum(b_keys.values()))
    keys = sorted(set(a_keys) | set(b_keys))
    if min(entry["training_n"], entry["serving_n"]) < drift.MIN_SAMPLE or len(keys) < 2:
        return entry, []
    return entry, [drift.independence(np.array([[a_keys[k] for k in keys], [b_keys[k] for k in keys]]))]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "missing" if value is None else str(value)


def table(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table for stdout."""
    lines = []
    if report.get("mode") == "distributions":
        lines.append(f"{'feature':24} {'kind':11} {'train n':>8} {'serve n':>8} {'test':24} {'effect':>16} "
                     f"{'p adj':>9}  verdict")
        for f in report["features"]:
            tests = f["tests"] or [None]
            for t in tests:
                effect = f"{t['effect']}={t['effect_value']:.3g}" if t and t["effect_value"] is not None else "-"
                p = f"{t['p_adjusted']:.3g}" if t and t["p_adjusted"] is not None else "-"
                verdict = ("DIFFERS" if f["skewed"] else "not tested" if t is None
                           else "too few rows to call" if f.get("verdict") == drift.TOO_FEW else "ok")
                lines.append(f"{f['feature'][:24]:24} {f['kind']:11} {f['training_n']:>8} {f['serving_n']:>8} "
                             f"{(t['test'] if t else '-'):24} {effect:>16} {p:>9}  {verdict}")
        return "\n".join(lines)
    rows = report["rows"]
    lines.append(f"joined {rows['joined']} of {rows['training_distinct_ids']} training ids to "
                 f"{rows['serving_ids']} serving ids ({report['id_column']} = {report['serving_id_field']})")
    lines.append(f"{'feature':24} {'kind':11} {'compared':>9} {'mismatch':>9} {'share':>8} {'ratio':>9}  "
                 "largest difference (id: training -> serving)")
    for f in report["features"]:
        example = ""
        if f["largest"]:
            e = f["largest"][0]
            example = f"{e['id']}: {_cell(e['training'])} -> {_cell(e['serving'])}"
        flag = "  SKEW" if f["skewed"] else ""
        ratio = f"{f['median_ratio']:.4g}" if f["median_ratio"] is not None else ""
        lines.append(f"{f['feature'][:24]:24} {f['kind']:11} {f['compared']:>9} {f['mismatched']:>9} "
                     f"{f['share']:>8.2%} {ratio:>9}  {example}{flag}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    features = [n.strip() for n in args.features.split(",") if n.strip()] if args.features else None
    if not args.no_id and not args.id_column:
        raise ValueError("give --id-column (the training id to join on), or --no-id to compare distributions")
    if not 0 <= args.max_mismatch <= 1:
        raise ValueError(f"--max-mismatch must be between 0 and 1, got {args.max_mismatch}")
    training = read_training(Path(args.training), args.id_column)
    events = list(read_events(args.serving, since=parse_since(args.since), index=args.es_index))
    if not events:
        raise ValueError(f"{args.serving}: no prediction events" + (f" since {args.since}" if args.since else ""))
    if args.no_id:
        drift.require_scipy()
        report = compare_distributions(training, events, features=features)
    else:
        report = compare(training, events, id_column=args.id_column, id_field=args.serving_id_field,
                         features=features, rtol=args.rtol, atol=args.atol, max_mismatch=args.max_mismatch,
                         top=args.top)
    report.update(training=args.training, serving=args.serving, since=args.since)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if report["skewed"]:
        limit = "distributions differ" if args.no_id else f"mismatch share above {args.max_mismatch:g}"
        print(f"skew: {limit} in {', '.join(report['skewed'])}", file=sys.stderr)
        return 1
    return 0


def add_parser(commands: Any) -> None:
    """Register ``modelmon skew``."""
    p = commands.add_parser("skew", help="compare training rows with logged serving inputs (training/serving skew)",
                            description="Compare training rows with the serving inputs logged for the same ids.")
    p.add_argument("--training", required=True, help="training data, CSV with a header row")
    p.add_argument("--serving", required=True, help="event file, directory of event files, or Elasticsearch URL")
    p.add_argument("--id-column", help="training column holding the id to join on (with --no-id: left out)")
    p.add_argument("--serving-id-field", help="event field holding that id (default: the input of the same name "
                                              "if logged, else event.id); e.g. event.id, labels.request")
    p.add_argument("--no-id", action="store_true", help="no shared id: compare each feature's distributions")
    p.add_argument("--features", help="features to compare, comma-separated (default: every training column logged)")
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance for numbers (default 1e-6)")
    p.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance for numbers (default 1e-9)")
    p.add_argument("--max-mismatch", type=float, default=0.01,
                   help="largest share of differing rows a feature may have (default 0.01); above it, exit 1")
    add_source_arguments(p)
    p.add_argument("--top", type=int, default=5, help="largest differences listed per feature (default 5)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(run=run)
