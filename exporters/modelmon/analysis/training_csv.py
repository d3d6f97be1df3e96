"""Training data in CSV files, read without pandas: ``modelmon profile`` profiles it,
``modelmon report`` compares events with it, ``modelmon skew`` joins events to its rows.

One rule for all three: a cell in ``NA_VALUES`` is missing, and a column is numeric
when every other cell is a number.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

# Cells read as missing: pandas' defaults that matter in practice.
NA_VALUES = frozenset(("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A"))


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV file: float arrays where every cell is a number or missing,
    object arrays (None for missing) otherwise."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        rows = list(reader)
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: duplicate column names in the header")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} cells, the header has {len(header)}")
    columns = {}
    for i, name in enumerate(header):
        cells = [None if row[i] in NA_VALUES else row[i] for row in rows]
        try:
            columns[name] = np.array([np.nan if c is None else float(c) for c in cells], dtype=np.float64)
        except ValueError:
            columns[name] = np.array(cells, dtype=object)
    return columns
