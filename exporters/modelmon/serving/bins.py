"""Binning of feature and prediction values against a reference.

Every column has a fixed list of bins, so one metric family carries distribution,
missing, invalid, out-of-range and unseen counts. The same code bins the training
data (to make the reference shares) and the live traffic, so both sides agree.

Numeric columns: bins between quantile edges, then ``__below__``, ``__above__``.
Categorical columns: the reference categories, then ``__unseen__``.
Both end with ``__missing__`` (absent, None, NaN) and ``__invalid__`` (wrong type, inf).

Numeric and text columns also keep running sums of their finite values, split by sign
so that none of them ever decreases (Prometheus reads a decrease as a counter reset):
``SUM_SLOTS`` entries of ``sums`` from the column's ``sum_index`` on, the sum of the
values >= 0, the sum of the magnitudes of the values < 0, and the number of values < 0.
The number of values >= 0 is the rest of the finite count (in range, below, above).
"""
from __future__ import annotations

import math
import numbers
import re
import sys
from bisect import bisect_right
from collections import Counter
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MISSING = "__missing__"
INVALID = "__invalid__"
BELOW = "__below__"
ABOVE = "__above__"
UNSEEN = "__unseen__"
SPECIAL_BINS = (BELOW, ABOVE, UNSEEN, MISSING, INVALID)
NUMERIC_SPECIAL = (BELOW, ABOVE, MISSING, INVALID)
CATEGORICAL_SPECIAL = (UNSEEN, MISSING, INVALID)


def numeric_bin_labels(edges: Sequence[float]) -> list[str]:
    """Labels of the in-range bins: ``"03:[1200,1800)"``, the last one closed."""
    if len(edges) == 1:
        return [f"00:[{edges[0]:g},{edges[0]:g}]"]
    last = len(edges) - 2
    return [
        f"{i:02d}:[{lo:g},{hi:g}{']' if i == last else ')'}"
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
    ]


_MASKED = np.ma.masked  # numpy.ma's masked element: missing, like NaN


def is_missing_object(value: Any) -> bool:
    """None, numpy's masked element, or pandas' NA / NaT markers (without importing pandas)."""
    if value is None or value is _MASKED:
        return True
    pd = sys.modules.get("pandas")
    return pd is not None and (value is pd.NA or value is pd.NaT)


def category_key(value: Any) -> str | None:
    """The text a categorical value is looked up by: None if missing, INVALID if unusable.

    Strings stand for themselves; integers and integral floats by their digits, so
    integer-coded categories (3, 3.0, "3") agree; bools as "True"/"False".
    """
    if isinstance(value, str):
        return str(value)
    if is_missing_object(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        try:
            return str(int(value))
        except TypeError:  # numpy's timedelta64 is an Integral, and NaT has no int
            return INVALID
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
    return INVALID


COMPARE_FROM_ROWS_PER_EDGE = 200  # from len(column) / len(edges) on, count_array compares
SUM_SLOTS = 3  # entries a numeric column takes in ``sums``: positive sum, negative magnitudes, negatives
SignedSums = tuple[float, float, int]  # (sum of values >= 0, sum of |values < 0|, number of values < 0)


def signed_sums(x: np.ndarray, total: float | None = None) -> SignedSums:
    """The signed sums of an array of finite values (``total``: its sum, if known already)."""
    negative = x < 0.0
    k = int(np.count_nonzero(negative))
    if k == 0:  # the common case: a column of values >= 0
        return (float(x.sum()) if total is None else total), 0.0, 0
    if k == len(x):
        return 0.0, -(float(x.sum()) if total is None else total), k
    # Not np.dot with the masks (faster on one thread, but BLAS spreads long columns over
    # threads: 10 ms instead of 0.1 ms for 100,000 values on a loaded machine), nor x[mask]
    # (7x slower than this on long columns).
    return float(np.maximum(x, 0.0).sum()), -float(np.minimum(x, 0.0).sum()), k


class NumericBins:
    """Bins of a numeric column; counts go to ``counts[offset + slot]``, signed sums to
    ``sums[sum_index:sum_index + SUM_SLOTS]``."""

    kind = "numeric"

    def __init__(self, edges: Sequence[float], counts: list, sums: list, offset: int, sum_index: int):
        self.edges = [float(e) for e in edges]
        self.labels = numeric_bin_labels(self.edges) + list(NUMERIC_SPECIAL)
        n = len(self.labels) - 4
        self.n_in_range = n
        self.below, self.above, self.missing, self.invalid = (offset + n + i for i in range(4))
        self.offset, self.sum_index = offset, sum_index
        self._negative_sum, self._negatives = sum_index + 1, sum_index + 2
        self._counts, self._sums = counts, sums
        self._top = self.edges[-1]
        self._nonnegative = self.edges[0] >= 0.0  # then only values below the range can be < 0
        self._last = offset + max(len(self.edges) - 2, 0)
        self._m = len(self.edges)
        # bisect_right(edges, x) -> slot, for 0 <= result < m
        self._slot_of = [self.below] + [offset + i for i in range(self._m - 1)]
        self._table = np.array(
            [n] + list(range(self._m - 1)) + [n + 1], dtype=np.intp
        )  # same, relative to offset, with result m -> __above__
        self.slots = len(self.labels)  # entries this column takes in ``counts``

    def add(self, value: Any) -> int:
        """Count one value and return its slot (hot path: no numpy, no exceptions out)."""
        t = type(value)
        if t is float:
            x = value
        elif t is int:
            try:
                x = float(value)
            except OverflowError:
                self._counts[self.invalid] += 1
                return self.invalid
        elif isinstance(value, (numbers.Real, Decimal)) and not isinstance(value, (bool, np.bool_)):
            try:
                x = float(value)
            except (OverflowError, ValueError, TypeError):  # TypeError: numpy's timedelta64, an Integral
                self._counts[self.invalid] += 1
                return self.invalid
        else:
            slot = self.missing if is_missing_object(value) else self.invalid
            self._counts[slot] += 1
            return slot
        if x != x:
            self._counts[self.missing] += 1
            return self.missing
        r = bisect_right(self.edges, x)
        if r < self._m:
            if r == 0 and x == -math.inf:
                self._counts[self.invalid] += 1
                return self.invalid
            slot = self._slot_of[r]
        elif x == self._top:
            slot = self._last
        elif x == math.inf:
            self._counts[self.invalid] += 1
            return self.invalid
        else:
            slot = self.above
        self._counts[slot] += 1
        if x < 0.0:
            self._sums[self._negative_sum] -= x
            self._sums[self._negatives] += 1
        else:
            self._sums[self.sum_index] += x
        return slot

    def count_array(self, column: Any) -> tuple[list[int], SignedSums]:
        """Counts per bin (relative to this column's first slot) and the signed sums of finite values."""
        x = column.to_numpy() if hasattr(column, "to_numpy") else np.asarray(column)
        if x.ndim != 1 or x.dtype.kind not in "fiu":  # object, bool, ...: value by value
            scratch = NumericBins(self.edges, [0] * len(self.labels), [0.0, 0.0, 0], 0, 0)
            for value in x.tolist() if x.ndim == 1 else list(column):
                scratch.add(value)
            return scratch._counts, tuple(scratch._sums)
        x = x.astype(np.float64, copy=False)
        if len(x) >= COMPARE_FROM_ROWS_PER_EDGE * self._m:
            return self._count_by_comparison(x)
        slots = self._table[np.searchsorted(self.edges, x, side="right")]
        slots[x == self._top] = max(self._m - 2, 0)
        finite = np.isfinite(x)
        if not finite.all():
            slots[np.isinf(x)] = self.n_in_range + 3
            slots[np.isnan(x)] = self.n_in_range + 2
            x = x[finite]
        counts = np.bincount(slots, minlength=len(self.labels)).tolist()
        return counts, self._signed_sums(x, counts[self.n_in_range])

    def _signed_sums(self, x: np.ndarray, below: int, total: float | None = None) -> SignedSums:
        """``signed_sums`` of the finite values, skipping the search for negative ones when
        no value is below a range that starts at 0 or above (prices, areas, counts...)."""
        if self._nonnegative and not below:
            return (float(x.sum()) if total is None else total), 0.0, 0
        return signed_sums(x, total)

    def _count_by_comparison(self, x: np.ndarray) -> tuple[list[int], SignedSums]:
        """``count_array`` for long columns: one vectorised pass per edge (values under it)
        instead of a binary search per value, several times faster past a few thousand rows."""
        total = float(x.sum())
        nan = posinf = neginf = 0
        finite = x
        if not math.isfinite(total):  # a NaN or an inf somewhere (or a sum past float's range)
            nan = int(np.count_nonzero(np.isnan(x)))
            posinf, neginf = int(np.count_nonzero(x == math.inf)), int(np.count_nonzero(x == -math.inf))
            finite = x[np.isfinite(x)]
            total = float(finite.sum())
        under = [int(np.count_nonzero(x < edge)) for edge in self.edges]
        at_top = int(np.count_nonzero(x == self._top))
        counts = [under[i + 1] - under[i] for i in range(self._m - 1)] or [0]
        counts[-1] += at_top  # the last bin is closed
        counts += [under[0] - neginf, len(x) - nan - under[-1] - at_top - posinf, nan, posinf + neginf]
        return counts, self._signed_sums(finite, counts[self.n_in_range], total if math.isfinite(total) else None)


class CategoricalBins:
    """Bins of a categorical column: its reference categories, then the special bins."""

    kind = "categorical"

    def __init__(self, categories: Sequence[str], counts: list, offset: int):
        self.categories = list(categories)
        self.labels = self.categories + list(CATEGORICAL_SPECIAL)
        n = len(self.categories)
        self.unseen, self.missing, self.invalid = offset + n, offset + n + 1, offset + n + 2
        self._index = {c: offset + i for i, c in enumerate(self.categories)}
        self._counts, self.offset = counts, offset
        self.slots = len(self.labels)

    def slot(self, value: Any) -> int:
        if type(value) is str:
            return self._index.get(value, self.unseen)
        key = category_key(value)
        if key is None:
            return self.missing
        if key is INVALID:
            return self.invalid
        return self._index.get(key, self.unseen)

    def add(self, value: Any) -> int:
        slot = self.slot(value)
        self._counts[slot] += 1
        return slot

    def count_array(self, column: Any) -> tuple[list[int], None]:
        """Counts per bin (relative to this column's first slot); no sums (None).

        Distinct values are looked up once: counted by pandas' value_counts (in C) for long
        columns when pandas is loaded, by collections.Counter otherwise.
        """
        counts = [0] * len(self.labels)
        for value, n in _tally(column):
            counts[self.slot(value) - self.offset] += n
        return counts, None


VALUE_COUNTS_FROM_ROWS = 5_000  # below, collections.Counter is faster than pandas


def _tally(column: Any) -> Iterable[tuple[Any, int]]:
    """(distinct value, occurrences) pairs of a column; missing values come as None or NaN."""
    pairs = _hashed_tally(column)
    if pairs is None or (getattr(column, "dtype", None) != np.bool_ and any(type(v) in _BOOLS for v, _ in pairs)):
        # Hashing merges True with 1 and 1.0 (False with 0), which are different categories.
        values = column.tolist() if hasattr(column, "tolist") else list(column)
        return ((value, 1) for value in values)
    return pairs


_BOOLS = (bool, np.bool_)


def _hashed_tally(column: Any) -> list[tuple[Any, int]] | None:
    """Distinct values counted by hashing; None for unhashable values."""
    pd = sys.modules.get("pandas")
    try:
        if pd is not None and getattr(column, "ndim", 0) == 1 and len(column) >= VALUE_COUNTS_FROM_ROWS:
            counted = pd.Series(column, copy=False).value_counts(dropna=False, sort=False)
            return list(zip(counted.index.tolist(), counted.tolist()))
        return list(Counter(column.tolist() if hasattr(column, "tolist") else list(column)).items())
    except TypeError:  # unhashable values (lists, dicts)
        return None


_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens: the unit of text length and vocabulary."""
    return _TOKEN.findall(text.lower())


class TextBins(NumericBins):
    """A free-text column: binned by its number of tokens like a numeric column.

    Two more slots after the bins count tokens and tokens outside the reference
    vocabulary. Strings are text; None and NaN are missing; anything else invalid.
    """

    kind = "text"

    def __init__(self, edges: Sequence[float], vocabulary: Iterable[str], counts: list, sums: list, offset: int,
                 sum_index: int):
        super().__init__(edges, counts, sums, offset, sum_index)
        self.vocabulary = frozenset(vocabulary)
        self.tokens = offset + len(self.labels)
        self.unknown_tokens = self.tokens + 1
        self.slots = len(self.labels) + 2

    def add(self, value: Any) -> int:
        if isinstance(value, str):
            words = tokenize(value)
            self._counts[self.tokens] += len(words)
            self._counts[self.unknown_tokens] += sum(w not in self.vocabulary for w in words)
            return super().add(len(words))
        if is_missing_object(value) or (isinstance(value, float) and value != value):
            return super().add(None)
        self._counts[self.invalid] += 1
        return self.invalid

    def count_array(self, column: Any) -> tuple[list[int], SignedSums]:
        scratch = TextBins(self.edges, self.vocabulary, [0] * self.slots, [0.0, 0.0, 0], 0, 0)
        for value in column.tolist() if hasattr(column, "tolist") else list(column):
            scratch.add(value)
        return scratch._counts, tuple(scratch._sums)


Bins = NumericBins | CategoricalBins | TextBins


FLAGS = ("missing", "invalid", "unseen", "out_of_range")
_FLAG_OF_BIN = {MISSING: "missing", INVALID: "invalid", UNSEEN: "unseen", BELOW: "out_of_range",
                ABOVE: "out_of_range"}


class RowFlags:
    """Reads a row's data-quality flags off the slots its values were counted in."""

    def __init__(self, features: Mapping[str, Bins], outputs: Mapping[str, Bins]):
        self._flag_of = {
            b.offset + i: _FLAG_OF_BIN[label]
            for b in features.values()
            for i, label in enumerate(b.labels)
            if label in _FLAG_OF_BIN
        }
        self._nonfinite = {slot for b in outputs.values() for slot in (b.missing, b.invalid)}

    def features(self, names: Iterable[str], slots: Iterable[int]) -> dict[str, list[str]]:
        """Feature names per flag (missing, invalid, unseen, out_of_range)."""
        flags: dict[str, list[str]] = {flag: [] for flag in FLAGS}
        for name, slot in zip(names, slots):
            flag = self._flag_of.get(slot)
            if flag is not None:
                flags[flag].append(name)
        return flags

    def nonfinite(self, output_slots: Iterable[int]) -> bool:
        """Whether any output was missing, NaN, inf or of the wrong type."""
        return any(slot in self._nonfinite for slot in output_slots)
