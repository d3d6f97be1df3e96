"""Calibration of a classifier's probabilities on a labeled hold-out set (issue 15).

Confidence-based performance estimation (CBPE, as in NannyML) estimates a classifier's
quality without labels: if the probability a model gives its predicted class is
calibrated, the expected number of correct rows is the sum of those probabilities. The
calibration map is fitted once, at profile time, on a labeled hold-out set (not the
training data, on which the model is over-confident) and stored in the reference.

Method: histogram binning with linear interpolation. The hold-out probabilities of a
class are cut into bins at their quantiles (``QUANTILE_BINS``) and at every tenth
(``0, 0.1, ..., 1``: a confident model puts most rows near 0 and 1, and the tenths keep
the middle, where a shifted stream goes, from falling into one wide bin); each non-empty
bin gives one point (mean probability, share of the class among its rows, shrunk toward
the mean probability by ``SHRINK`` pseudo-rows so a bin of a few rows stays near the
identity), and serving interpolates linearly between the points (flat beyond the first
and last). Why not isotonic regression (NannyML's default): its number of steps grows
with the hold-out set, unbounded in the YAML and in the serving lookup, and it is a step
function that maps a whole range of probabilities to one value; here the map has at most
``MAX_POINTS`` points whatever the hold-out size, a row costs one bisection, and the
interpolation keeps the resolution within a bin.

Binary models keep one map, for the positive class (the other is its complement);
multiclass models one map per class (one-vs-rest), renormalised to sum to 1 per row.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .bins import INVALID, category_key

METHOD = "histogram"
QUANTILE_BINS = 20
SHRINK = 10.0  # pseudo-rows pulling a bin's share toward its mean probability
MAX_POINTS = 64  # per class map: 20 quantile bins and 10 tenths give at most 30
MAX_CLASSES = 20  # a multiclass model exports MAX_CLASSES ** 2 expected-confusion series at most
MIN_HOLDOUT_ROWS = 200
MIN_CLASS_ROWS = 10
TOLERANCE = 1e-3  # a row's probabilities must sum to 1 within this


@dataclass(frozen=True)
class Calibration:
    """The calibration maps of a classifier, and the classes in the order of its probabilities."""

    classes: tuple[str, ...]
    positive: str | None  # binary models: the positive class; None for multiclass
    maps: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]  # class -> (x, y) points
    rows: int
    method: str = METHOD

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "rows": self.rows, "classes": list(self.classes)}
        if self.positive is not None:
            out["positive"] = self.positive
        out["maps"] = {c: {"x": list(x), "y": list(y)} for c, (x, y) in self.maps.items()}
        return out

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n x k, rows summing to 1) of raw ones in the class order."""
        p = np.asarray(probabilities, dtype=np.float64)
        if self.binary:
            j = self.classes.index(self.positive)
            x, y = self.maps[self.positive]
            q = np.interp(p[:, j], x, y)
            out = np.empty_like(p)
            out[:, j], out[:, 1 - j] = q, 1.0 - q
            return out
        out = np.column_stack([np.interp(p[:, j], *self.maps[c]) for j, c in enumerate(self.classes)])
        total = out.sum(axis=1, keepdims=True)
        return np.divide(out, total, out=p.copy(), where=total > 0)

    @classmethod
    def from_dict(cls, data: Any) -> "Calibration":
        """Parse the ``calibration`` section of a reference; ValueError names the field."""
        if not isinstance(data, Mapping):
            raise ValueError("calibration: expected a mapping with method, rows, classes, maps")
        if data.get("method") != METHOD:
            raise ValueError(f"calibration.method: expected {METHOD!r}, got {data.get('method')!r}")
        rows = data.get("rows")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < MIN_HOLDOUT_ROWS:
            raise ValueError(f"calibration.rows: expected an integer >= {MIN_HOLDOUT_ROWS}, got {rows!r}")
        classes = data.get("classes")
        if not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES or \
                len({str(c) for c in classes}) != len(classes):
            raise ValueError(f"calibration.classes: expected 2 to {MAX_CLASSES} distinct classes, got {classes!r}")
        classes = tuple(str(c) for c in classes)
        positive = data.get("positive")
        if len(classes) == 2:
            if positive is None or str(positive) not in classes:
                raise ValueError(f"calibration.positive: expected one of {list(classes)}, got {positive!r}")
            positive = str(positive)
        elif positive is not None:
            raise ValueError("calibration.positive: only binary models name a positive class")
        maps = data.get("maps")
        wanted = {positive} if positive is not None else set(classes)
        if not isinstance(maps, Mapping) or {str(k) for k in maps} != wanted:
            raise ValueError(f"calibration.maps: expected a map for each of {sorted(wanted)}")
        parsed = {}
        for name, points in maps.items():
            where = f"calibration.maps.{name}"
            if not isinstance(points, Mapping) or not isinstance(points.get("x"), list) or \
                    not isinstance(points.get("y"), list):
                raise ValueError(f"{where}: expected a mapping with lists x and y")
            x, y = points["x"], points["y"]
            if not 1 <= len(x) <= MAX_POINTS or len(x) != len(y):
                raise ValueError(f"{where}: expected 1 to {MAX_POINTS} points, as many x as y")
            if not all(_share(v) for v in x + y) or any(b <= a for a, b in zip(x, x[1:])):
                raise ValueError(f"{where}: expected probabilities between 0 and 1, x strictly increasing")
            parsed[str(name)] = (tuple(float(v) for v in x), tuple(float(v) for v in y))
        return cls(classes=classes, positive=positive, maps=parsed, rows=rows)


def _share(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def interpolate(x: Sequence[float], y: Sequence[float], value: float) -> float:
    """np.interp of one value (the row path): flat beyond the ends."""
    i = bisect_right(x, value)
    if i == 0:
        return y[0]
    if i == len(x):
        return y[-1]
    x0 = x[i - 1]
    return y[i - 1] + (y[i] - y[i - 1]) * (value - x0) / (x[i] - x0)


def fit_map(p: np.ndarray, hit: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Histogram-binning points of one class: p its probabilities, hit whether the row was that class."""
    edges = np.unique(np.concatenate([np.quantile(p, np.linspace(0, 1, QUANTILE_BINS + 1)),
                                      np.linspace(0, 1, 11)]))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rows = np.bincount(which, minlength=len(edges) - 1)
    p_sum = np.bincount(which, weights=p, minlength=len(edges) - 1)
    hits = np.bincount(which, weights=hit.astype(np.float64), minlength=len(edges) - 1)
    full = rows > 0
    mean_p = p_sum[full] / rows[full]
    share = (hits[full] + SHRINK * mean_p) / (rows[full] + SHRINK)
    x, keep = np.unique(np.round(mean_p, 12), return_index=True)
    return tuple(float(v) for v in x), tuple(float(min(1.0, max(0.0, v))) for v in share[keep])


def class_keys(values: Any) -> list[str | None]:
    """Class keys of labels or predicted classes, as the categorical bins key them (None: missing)."""
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [category_key(v) for v in values]


def fit(holdout: Any, *, target: str, probabilities: Sequence[str], classes: Sequence[Any] | None = None,
        positive: Any = None, prediction: str | None = None) -> tuple[Calibration, dict[str, float]]:
    """The calibration of a hold-out set's probabilities, and the model's realized metrics on it.

    ``probabilities`` names the columns of the class probabilities, in the order of
    ``classes`` (default: the sorted distinct labels of ``target``, scikit-learn's
    ``classes_`` order). ``positive`` is the positive class of a binary model (default:
    the second class, scikit-learn's). The predicted class is ``prediction``'s column if
    given and present, else the class of the highest probability. Raises ValueError on
    probabilities that are not probabilities, labels not among the classes, and a
    hold-out set too small to calibrate.
    """
    columns = list(holdout.columns) if hasattr(holdout, "columns") else list(holdout.keys())
    names = [str(c) for c in probabilities]
    missing = sorted({target, *names} - {str(c) for c in columns})
    if missing:
        raise ValueError(f"hold-out set lacks columns {missing}")
    if not 2 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"probabilities: expected 2 to {MAX_CLASSES} columns, one per class, got {len(names)}")
    labels = class_keys(holdout[target])
    n = len(labels)
    if n < MIN_HOLDOUT_ROWS:
        raise ValueError(f"hold-out set has {n} rows; calibrating needs at least {MIN_HOLDOUT_ROWS}")
    if classes is None:
        raw = holdout[target]
        raw = raw.tolist() if hasattr(raw, "tolist") else list(raw)
        try:
            distinct = sorted({v for v, k in zip(raw, labels) if k not in (None, INVALID)})
        except TypeError:
            raise ValueError(f"{target}: labels of mixed types; give classes=[...] in the order of the "
                             "probabilities") from None
        classes = list(dict.fromkeys(category_key(v) for v in distinct))
    keys = [category_key(c) for c in classes]
    if any(k in (None, INVALID) for k in keys) or len(set(keys)) != len(keys):
        raise ValueError(f"classes: expected distinct class labels, got {list(classes)!r}")
    if len(keys) != len(names):
        raise ValueError(f"{target}: labels of {len(keys)} classes {keys[:MAX_CLASSES]} for {len(names)} probability "
                         f"columns {names}: labels not among the model's classes? (classes=[...] names them)")
    index = {k: j for j, k in enumerate(keys)}
    unknown = sorted({str(k) for k in labels if k not in index})
    if unknown:
        raise ValueError(f"{target}: labels not among the classes {keys}: {unknown[:5]}")
    y = np.array([index[k] for k in labels])
    counts = np.bincount(y, minlength=len(keys))
    if counts.min() < MIN_CLASS_ROWS:
        raise ValueError(f"hold-out set has {dict(zip(keys, counts.tolist()))} rows per class; calibrating "
                         f"needs at least {MIN_CLASS_ROWS} of each")
    p = np.column_stack([np.asarray(holdout[c], dtype=np.float64) for c in names])
    bad = ~(np.isfinite(p).all(axis=1) & (p >= 0).all(axis=1) & (p <= 1).all(axis=1)
            & (np.abs(p.sum(axis=1) - 1) <= TOLERANCE))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"probabilities {names}: {int(bad.sum())} rows are not probabilities summing to 1 "
                         f"(within {TOLERANCE}), e.g. row {first}: {p[first].tolist()}")
    if len(keys) == 2:
        positive = keys[1] if positive is None else category_key(positive)
        if positive not in index:
            raise ValueError(f"positive: expected one of the classes {keys}, got {positive!r}")
        fitted = {positive: fit_map(p[:, index[positive]], y == index[positive])}
    else:
        if positive is not None:
            raise ValueError("positive: only a binary model has a positive class")
        fitted = {k: fit_map(p[:, j], y == j) for j, k in enumerate(keys)}
    if prediction is not None and prediction in columns:
        predicted_keys = class_keys(holdout[prediction])
        if any(k not in index for k in predicted_keys):
            raise ValueError(f"{prediction}: hold-out predictions not among the classes {keys}")
        predicted = np.array([index[k] for k in predicted_keys])
    else:
        predicted = p.argmax(axis=1)
    calibration = Calibration(classes=tuple(keys), positive=positive if len(keys) == 2 else None, maps=fitted, rows=n)
    return calibration, realized_metrics(y, predicted, index.get(positive) if len(keys) == 2 else None)


def realized_metrics(actual: np.ndarray, predicted: np.ndarray, positive: int | None) -> dict[str, float]:
    """Accuracy, and for a binary model precision, recall and F1 of the positive class."""
    metrics = {"accuracy": float(np.mean(actual == predicted))}
    if positive is not None:
        tp = float(np.sum((predicted == positive) & (actual == positive)))
        fp = float(np.sum((predicted == positive) & (actual != positive)))
        fn = float(np.sum((predicted != positive) & (actual == positive)))
        metrics["precision"] = tp / (tp + fp) if tp + fp else 0.0
        metrics["recall"] = tp / (tp + fn) if tp + fn else 0.0
        metrics["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
