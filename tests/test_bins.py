"""Each bin rule of DESIGN.md section 3, for single values and for arrays."""
from __future__ import annotations

import decimal
import math

import numpy as np
import pandas as pd
import pytest

from modelmon.serving.bins import (
    COMPARE_FROM_ROWS_PER_EDGE,
    SUM_SLOTS,
    VALUE_COUNTS_FROM_ROWS,
    CategoricalBins,
    NumericBins,
    numeric_bin_labels,
)

EDGES = [0.0, 10.0, 20.0, 30.0]


def sums() -> list:
    return [0.0, 0.0, 0][:SUM_SLOTS]


def numeric(edges=EDGES) -> NumericBins:
    return NumericBins(edges, [0] * (len(edges) + 3 + (len(edges) == 1)), sums(), 0, 0)


def categorical() -> CategoricalBins:
    return CategoricalBins(["a", "b", "7"], [0] * 6, 0)


def added(binner, column):
    """The binner after adding the column's values one at a time (what count_array must match)."""
    for value in list(column):
        binner.add(value)
    return binner


def bin_of(binner, value) -> str:
    before = list(binner._counts)
    binner.add(value)
    changed = [i for i, (x, y) in enumerate(zip(before, binner._counts)) if x != y]
    assert len(changed) == 1, f"{value!r} counted in {len(changed)} bins"
    return binner.labels[changed[0] - binner.offset]


def test_numeric_labels_are_sorted_intervals_with_a_closed_top():
    assert numeric_bin_labels(EDGES) == ["00:[0,10)", "01:[10,20)", "02:[20,30]"]
    assert numeric_bin_labels([5.0]) == ["00:[5,5]"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, "00:[0,10)"),
        (9.99, "00:[0,10)"),
        (10, "01:[10,20)"),
        (30.0, "02:[20,30]"),  # the training maximum is in range
        (-0.1, "__below__"),
        (30.5, "__above__"),
        (np.float32(15), "01:[10,20)"),
        (np.int64(25), "02:[20,30]"),
        (decimal.Decimal("5"), "00:[0,10)"),
        (None, "__missing__"),
        (math.nan, "__missing__"),
        (np.nan, "__missing__"),
        (pd.NA, "__missing__"),
        (math.inf, "__invalid__"),
        (-math.inf, "__invalid__"),
        ("12", "__invalid__"),
        (True, "__invalid__"),
        (np.bool_(True), "__invalid__"),
        (10**400, "__invalid__"),
        ([1, 2], "__invalid__"),
        ({"x": 1}, "__invalid__"),
        (object(), "__invalid__"),
    ],
)
def test_numeric_value_lands_in_its_bin(value, expected):
    assert bin_of(numeric(), value) == expected


def test_numeric_sums_count_finite_values_only_split_by_sign():
    binner = numeric()
    for v in (5, 35.0, -1, None, math.inf, -math.inf, "x", -2.5, 0.0, -0.0):
        binner.add(v)
    # values >= 0 (zero and -0.0 included), magnitudes of values < 0, number of values < 0
    assert binner._sums == [40.0, 3.5, 2]


@pytest.mark.parametrize("edges", [EDGES, [-60.0, -50.0, -40.0], [-1.0, 0.0, 1.0]])
def test_array_sums_are_split_by_sign_exactly(edges):
    column = np.array([-3.0, 0.0, -0.0, 2.0, -50.0, 70.0, -100.0, np.nan, -np.inf, np.inf])
    counts, signed = numeric(edges).count_array(column)
    assert signed == (72.0, 153.0, 3)
    assert signed == tuple(added(numeric(edges), column)._sums)
    for only in (column[column > 0], column[column < 0], np.array([0.0, -0.0])):
        assert numeric(edges).count_array(only)[1] == tuple(added(numeric(edges), only)._sums)


def test_constant_feature_has_one_closed_bin():
    binner = numeric([3.0])
    assert [bin_of(binner, v) for v in (3, 2, 4)] == ["00:[3,3]", "__below__", "__above__"]
    counts, signed = binner.count_array(np.array([3.0, 2.0, 4.0]))
    assert counts == [1, 1, 1, 0, 0] and signed == (9.0, 0.0, 0)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a", "a"),
        ("z", "__unseen__"),
        ("x" * 1_000_000, "__unseen__"),
        (np.str_("b"), "b"),
        (7, "7"),  # integer-coded categories match by their digits
        (7.0, "7"),
        (np.int32(7), "7"),
        (3, "__unseen__"),
        (7.5, "__invalid__"),
        (math.inf, "__invalid__"),
        (None, "__missing__"),
        (math.nan, "__missing__"),
        (pd.NA, "__missing__"),
        ({"a": 1}, "__invalid__"),
        (["a"], "__invalid__"),
        (b"a", "__invalid__"),
    ],
)
def test_categorical_value_lands_in_its_bin(value, expected):
    assert bin_of(categorical(), value) == expected


def test_special_names_are_not_categories_even_if_sent():
    assert bin_of(categorical(), "__missing__") == "__unseen__"


MIXED = [1.0, 10.0, 30.0, -5.0, 99.0, np.nan, np.inf, -np.inf, 0.0, 20.0, 29.9]


@pytest.mark.parametrize(
    "column",
    [
        np.array(MIXED),
        np.array([1, 2, 40, -3], dtype=np.int64),
        np.array([1.5, None, "x", 12, math.nan, True], dtype=object),
        pd.Series(MIXED),
        pd.Series([1, None, 25], dtype="Int64"),
        [3.0, None, "7"],
    ],
)
def test_numeric_array_counts_equal_value_by_value(column):
    one_by_one = added(numeric(), column)
    counts, signed = numeric().count_array(column)
    assert counts == one_by_one._counts
    assert signed == pytest.approx(tuple(one_by_one._sums))


@pytest.mark.parametrize("edges", [EDGES, [3.0]])
@pytest.mark.parametrize("specials", [[], [np.nan, np.inf, -np.inf]])
def test_long_numeric_arrays_counted_by_comparison_equal_value_by_value(edges, specials):
    """Past COMPARE_FROM_ROWS_PER_EDGE rows per edge count_array compares instead of searching."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.uniform(-10, 40, 5000), np.repeat(edges, 3), specials])
    columns = [rng.permutation(values), np.round(values[np.isfinite(values)]).astype(np.int32)]
    for column in columns:
        assert len(column) >= COMPARE_FROM_ROWS_PER_EDGE * len(edges)
        one_by_one = added(numeric(edges), column)
        counts, signed = NumericBins(edges, [], [], 0, 0).count_array(column)
        assert counts == one_by_one._counts
        assert signed == pytest.approx(tuple(one_by_one._sums))


@pytest.mark.parametrize(
    "column",
    [
        np.array(["a", "b", "z", "a"]),
        np.array(["a", None, math.nan, 7, 7.0, 2.5, "q"], dtype=object),
        pd.Series(["a", None, "b"], dtype="string"),
        pd.Series(["a", "b", "a"], dtype="category"),
        [{"x": 1}, "a", ["b"]],
        [True, 1, 1.0, False, 0, True],  # hashing alone would merge True with 1
        np.array([True, False, True]),
    ],
)
def test_categorical_array_counts_equal_value_by_value(column):
    one_by_one = added(categorical(), column)
    counts, _ = categorical().count_array(column)
    assert counts == one_by_one._counts
    assert sum(counts) == len(column)


LONG = ["a", None, math.nan, pd.NA, 7, 7.0, "7", 2.5, "q", "b", True, 1, 0.0, False]


@pytest.mark.parametrize(
    "column",
    [
        np.array(LONG * 1000, dtype=object),
        pd.Series(LONG * 1000),
        pd.Series(["a", None, "b", "z"] * 2000, dtype="string"),
        pd.Series(["a", "b", "a", "q"] * 2000, dtype="category"),
        np.array([[1], "a"] * 3000, dtype=object),  # unhashable: value by value
    ],
)
def test_long_categorical_arrays_counted_by_pandas_equal_value_by_value(column):
    assert len(column) >= VALUE_COUNTS_FROM_ROWS
    one_by_one = added(categorical(), column)
    counts, _ = categorical().count_array(column)
    assert counts == one_by_one._counts
