"""Folding prediction events into what ``modelmon report`` tests: per-column counts on the
reference bins (and per segment), and a bounded uniform sample of the raw values."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any, Iterable, Mapping

import numpy as np

from ..serving.bins import CategoricalBins, NumericBins, TextBins
from ..serving.reference import ColumnProfile, Reference
from .event_source import REDACTED, field_value, logged_value

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
