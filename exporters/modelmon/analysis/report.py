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
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import zip_longest
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import drift, event_source
from ..serving.bins import ABOVE, BELOW, INVALID, MISSING, UNSEEN, CategoricalBins, NumericBins, TextBins
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
from ..serving.reference import ColumnProfile, Reference, ReferenceFileError
from .training_csv import read_csv

VERSION_FIELD = "modelmon.version"


@dataclass
class LiveData:
    """Logged values per column (features and outputs), with each row's group: the
    in-memory form, for callers that have their values at hand (``analyse`` folds it)."""

    columns: dict[str, list[Any]]
    groups: list[str | None]
    group_field: str
    events: int = 0
    other_models: int = 0
    failed: int = 0
    versions: Counter = field(default_factory=Counter)


CHUNK = 10_000  # events folded at a time
REPORT_FIELDS = ("modelmon.model", "modelmon.version", "modelmon.inputs", "modelmon.outputs", "event.outcome")
SAMPLE_SIZE = 100_000  # live rows kept (a uniform sample) for the raw-value tests
SAMPLE_SEED = 0
MAX_SEGMENTS = 50  # groups of --segment kept apart; the rest are counted together
OTHER_SEGMENT = "__other__"


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _bins(profile: ColumnProfile) -> Any:
    if profile.kind == "categorical":
        return CategoricalBins(profile.categories, [], 0)
    if profile.kind == "text":
        return TextBins(profile.edges, profile.vocabulary, [], [], 0, 0)
    return NumericBins(profile.edges, [], [], 0, 0)


def _count(profile: ColumnProfile, bins: Any, values: Any) -> np.ndarray:
    counts = bins.count_array(values)[0]
    if profile.kind == "text":  # token-count bins; the token tallies after them are left out
        counts = counts[: len(profile.bin_labels)]
    return np.asarray(counts, dtype=np.int64)


def bin_counts(profile: ColumnProfile, values: Sequence[Any]) -> list[int]:
    """Counts of ``values`` in the profile's bins, with the monitor's own binning."""
    column: Any = values
    if profile.kind == "numeric":
        if all(_is_number(v) for v in values):
            column = np.asarray(values, dtype=np.float64)
        else:
            column = np.asarray(values, dtype=object)
    return _count(profile, _bins(profile), column).tolist()


def finite(values: Iterable[Any]) -> np.ndarray:
    x = np.asarray([v for v in values if _is_number(v)], dtype=np.float64)
    return x[np.isfinite(x)]


def _numbers(values: list[Any]) -> tuple[Any, np.ndarray]:
    """A numeric column's chunk: what to bin (a float array when every value is a number)
    and the values as floats, NaN where a value is not a finite number."""
    x = np.array(values) if values else np.empty(0)
    if x.dtype.kind in "fi" and x.ndim == 1:
        x = x.astype(np.float64, copy=False)
        return x, np.where(np.isfinite(x), x, np.nan)
    as_float = np.array([v if _is_number(v) else math.nan for v in values], dtype=np.float64)
    as_float[~np.isfinite(as_float)] = np.nan
    return np.asarray(values, dtype=object), as_float


class Live:
    """The live side of a report, folded chunk by chunk in bounded memory: per column the
    counts on the reference bins (per segment too for the categorical and text columns,
    at most ``max_segments`` segments), and a uniform sample (reservoir, fixed seed) of
    at most ``sample_size`` rows of the numeric columns for the raw-value tests
    (Kolmogorov-Smirnov, Wasserstein, Kruskal-Wallis). Memory does not grow with the window."""

    def __init__(self, reference: Reference, group_field: str = VERSION_FIELD, *, sample_size: int = SAMPLE_SIZE,
                 max_segments: int = MAX_SEGMENTS, seed: int = SAMPLE_SEED, chunk: int = CHUNK):
        self.reference, self.group_field = reference, group_field
        self.profiles: dict[str, ColumnProfile] = {**reference.features, **reference.outputs}
        self._bins = {name: _bins(p) for name, p in self.profiles.items()}
        self.counts = {name: np.zeros(len(p.bin_labels), np.int64) for name, p in self.profiles.items()}
        self.redacted: Counter = Counter()
        self.numeric = [name for name, p in self.profiles.items() if p.kind == "numeric"]
        self._numeric_index = {name: i for i, name in enumerate(self.numeric)}
        self.sample_size, self.max_segments, self.chunk = sample_size, max_segments, chunk
        self.sample = np.full((sample_size, len(self.numeric)), np.nan)
        self.sample_groups = np.full(sample_size, -1, dtype=np.intp)
        self.offered = 0  # rows offered to the sample
        self._rng = np.random.default_rng(seed)
        self.segments: list[str] = []  # group names by code
        self._codes: dict[str | None, int] = {None: -1}
        self.lumped = 0  # rows of segments past the cap, counted as OTHER_SEGMENT
        self.segment_rows: list[int] = []  # rows per segment code
        self.group_counts: dict[str, list[np.ndarray]] = {}  # non-numeric column -> per segment code
        self.group_finite: dict[str, list[int]] = {}  # numeric column -> finite values per segment code
        self.events = self.other_models = self.failed = 0
        self.versions: Counter = Counter()
        self._inputs: list[Any] = []
        self._outputs: list[Any] = []
        self._groups: list[Any] = []
        self._default_group = group_field == VERSION_FIELD
        self.raw_values = True  # False: bin counts only (a Prometheus source)

    # events ---------------------------------------------------------------------------
    def add(self, event: Mapping[str, Any]) -> None:
        """Take one prediction event (others are counted and left out)."""
        model = event.get("modelmon.model")
        if model is not None and model != self.reference.model:
            self.other_models += 1
            return
        if event.get("event.outcome") == "failure":  # no output, and its inputs were never binned
            self.failed += 1
            return
        self.events += 1
        version = event.get("modelmon.version")
        self.versions[str(version)] += 1
        self._inputs.append(event.get("modelmon.inputs"))
        self._outputs.append(event.get("modelmon.outputs"))
        self._groups.append(version if self._default_group else field_value(event, self.group_field))
        if len(self._groups) >= self.chunk:
            self.flush()

    def add_all(self, events: Iterable[Mapping[str, Any]], progress: Any = None) -> "Live":
        for event in events:
            self.add(event)
            if progress is not None and not self.events % 5000:
                progress.update(self.events)
        self.flush()
        return self

    def flush(self) -> None:
        """Fold the buffered events."""
        if not self._groups:
            return
        columns: dict[str, list[Any]] = {}
        for mappings, names in ((self._inputs, self.reference.features), (self._outputs, self.reference.outputs)):
            logged = [m if type(m) is dict or isinstance(m, Mapping) else {} for m in mappings]
            for name in names:
                columns[name] = [m.get(name) for m in logged]
        groups = [None if g is None else str(g) for g in self._groups]
        self._inputs, self._outputs, self._groups = [], [], []
        self.fold(columns, groups, logged=True)

    def _code(self, group: str | None) -> int:
        code = self._codes.get(group)
        if code is None:
            if len(self.segments) < self.max_segments:
                code = len(self.segments)
                self.segments.append(group)  # type: ignore[arg-type]
            else:
                code = self._codes.get(OTHER_SEGMENT)
                if code is None:
                    code = self._codes[OTHER_SEGMENT] = len(self.segments)
                    self.segments.append(OTHER_SEGMENT)
            self._codes[group] = code
        return code

    # columns --------------------------------------------------------------------------
    def fold(self, columns: Mapping[str, list[Any]], groups: list[str | None], logged: bool = False) -> None:
        """Fold one chunk: values per column (as logged when ``logged``: "nan", masked...)."""
        m = len(groups)
        codes = np.fromiter((self._code(g) for g in groups), np.intp, m)
        other = self._codes.get(OTHER_SEGMENT)
        if other is not None:
            self.lumped += int(np.count_nonzero(codes == other))
        rows = np.bincount(codes[codes >= 0], minlength=len(self.segments)).tolist()
        self.segment_rows = [a + b for a, b in zip_longest(self.segment_rows, rows, fillvalue=0)]
        present = np.unique(codes[codes >= 0]).tolist()
        by_group = None if len(present) <= 1 else {g: np.flatnonzero(codes == g) for g in present}
        matrix = np.full((m, len(self.numeric)), np.nan)
        for name, values in columns.items():
            profile = self.profiles[name]
            values = list(values)
            if profile.kind == "numeric" and logged:
                x = np.array(values) if values else np.empty(0)
                if x.dtype.kind in "fi" and x.ndim == 1:  # numbers only, the common case: no string to decode
                    self._fold_numeric(name, profile, x.astype(np.float64, copy=False), x, codes, matrix)
                    continue
            if profile.kind == "categorical" and self._fold_categorical(name, profile, values, codes, present, logged):
                continue
            if logged:
                values = [logged_value(v) if type(v) is str else v for v in values]
            keep = None
            redacted = sum(v is REDACTED for v in values) if profile.kind != "numeric" or logged else 0
            if redacted:
                self.redacted[name] += redacted
                keep = np.array([v is not REDACTED for v in values])
                values = [v for v in values if v is not REDACTED]
            if profile.kind == "numeric":
                binned, as_float = _numbers(values)
                if keep is not None:
                    full = np.full(m, np.nan)
                    full[keep] = as_float
                    as_float = full
                self._fold_numeric(name, profile, as_float, binned, codes, matrix)
                continue
            column = np.asarray(values, dtype=object)
            counts = _count(profile, self._bins[name], column)
            self.counts[name] += counts
            per_group = self.group_counts.setdefault(name, [])
            while len(per_group) < len(self.segments):
                per_group.append(np.zeros(len(profile.bin_labels), np.int64))
            kept_codes = codes if keep is None else codes[keep]
            if by_group is None:
                if present:
                    per_group[present[0]] += counts if keep is None and not (codes < 0).any() else \
                        _count(profile, self._bins[name], column[kept_codes == present[0]])
            else:
                for g in present:
                    per_group[g] += _count(profile, self._bins[name], column[kept_codes == g])
        self._sample(matrix, codes)

    def _fold_numeric(self, name: str, profile: ColumnProfile, as_float: np.ndarray, binned: Any,
                      codes: np.ndarray, matrix: np.ndarray) -> None:
        self.counts[name] += _count(profile, self._bins[name], binned)
        as_float = np.where(np.isfinite(as_float), as_float, np.nan)
        matrix[:, self._numeric_index[name]] = as_float
        finite_codes = codes[~np.isnan(as_float) & (codes >= 0)]
        tally = self.group_finite.setdefault(name, [])
        per = np.bincount(finite_codes, minlength=len(self.segments)).tolist()
        tally.extend([0] * (len(per) - len(tally)))
        for g, n in enumerate(per):
            tally[g] += n

    def _fold_categorical(self, name: str, profile: ColumnProfile, values: list[Any], codes: np.ndarray,
                          present: list[int], logged: bool) -> bool:
        """Count a categorical chunk by its distinct (segment, value) pairs, each decoded and
        binned once; False (nothing counted) if a value is unhashable."""
        zipped = len(present) > 1 or bool((codes < 0).any())
        try:
            tally = Counter(zip(codes.tolist(), values)) if zipped else Counter(values)
        except TypeError:
            return False
        bins, counts = self._bins[name], self.counts[name]
        per_group = self.group_counts.setdefault(name, [])
        while len(per_group) < len(self.segments):
            per_group.append(np.zeros(len(profile.bin_labels), np.int64))
        single = present[0] if present else -1
        for key, n in tally.items():
            group, value = key if zipped else (single, key)
            if logged and type(value) is str:
                value = logged_value(value)
            if value is REDACTED:
                self.redacted[name] += n
                continue
            slot = bins.slot(value) - bins.offset
            counts[slot] += n
            if group >= 0:
                per_group[group][slot] += n
        return True

    def _sample(self, matrix: np.ndarray, codes: np.ndarray) -> None:
        """Algorithm R over the chunk: row i (0-based over the window) is kept with
        probability size / (i + 1), in place of a uniformly chosen kept row."""
        m, size = len(matrix), self.sample_size
        index = self.offered + np.arange(m)
        self.offered += m
        fill = index < size
        if fill.any():
            self.sample[index[fill]] = matrix[fill]
            self.sample_groups[index[fill]] = codes[fill]
        rest = np.flatnonzero(~fill)
        if len(rest):
            slot = self._rng.integers(0, index[rest] + 1)
            chosen = slot < size
            self.sample[slot[chosen]] = matrix[rest[chosen]]
            self.sample_groups[slot[chosen]] = codes[rest[chosen]]

    # read back ------------------------------------------------------------------------
    @property
    def sampled_rows(self) -> int:
        return min(self.offered, self.sample_size)

    def sample_values(self, name: str, group: int | None = None) -> np.ndarray:
        column = self.sample[: self.sampled_rows, self._numeric_index[name]]
        if group is not None:
            column = column[self.sample_groups[: self.sampled_rows] == group]
        return column[~np.isnan(column)]

    @classmethod
    def from_data(cls, reference: Reference, data: LiveData, **options: Any) -> "Live":
        live = cls(reference, data.group_field, **options)
        columns = {name: data.columns[name] for name in live.profiles}
        step = live.chunk
        for start in range(0, len(data.groups), step):
            live.fold({k: v[start:start + step] for k, v in columns.items()}, data.groups[start:start + step])
        live.events, live.other_models, live.failed = data.events, data.other_models, data.failed
        live.versions = Counter(data.versions)
        return live


def live_data(events: Iterable[Mapping[str, Any]], reference: Reference, group_field: str = VERSION_FIELD,
              **options: Any) -> Live:
    """Fold the reference's columns from events of the reference's model. Failed
    predictions are left out, as the monitor's metrics leave them out."""
    return Live(reference, group_field, **options).add_all(events)


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
            column["notes"].append(f"too few rows to call: an effect's interval reaches its threshold "
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
