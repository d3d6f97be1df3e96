"""Estimated quality before the labels arrive (issue 15): the serving side of CBPE.

Every row observed with class probabilities adds, through the reference's calibration
(calibration.py), its expected outcome to plain per-process float sums; ``flush`` folds
them into the ``modelmon_estimated_*`` counters with the monitor's other counts. The
rules divide: estimated accuracy = increase(correct) / increase(estimated), its standard
error sqrt(increase(correct_variance)) / increase(estimated) (a sum of Bernoulli
variances), and for binary models precision, recall and F1 from the expected confusion.

Nothing here raises: unusable probabilities count in ``modelmon_estimated_invalid_total``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .bins import category_key
from .calibration import TOLERANCE, Calibration, interpolate

# Slots of the running sums: the same for every model, then the model's cells.
ROWS, CORRECT, VARIANCE, INVALID = range(4)
TP, FP, FN, TN, POSITIVE_VARIANCE = range(4, 9)  # binary models
CELLS = ("tp", "fp", "fn", "tn")
LOW, HIGH = -TOLERANCE, TOLERANCE


class Estimator:
    """Expected-outcome sums of one monitor, and the counters they fold into."""

    def __init__(self, calibration: Calibration, metrics: Any, labels: tuple[str, str]):
        self.calibration = c = calibration
        self.classes = c.classes
        self.k = len(c.classes)
        self.index = {name: j for j, name in enumerate(c.classes)}
        children = [metrics[name].labels(*labels) for name in
                    ("estimated", "estimated_correct", "estimated_correct_variance", "estimated_invalid")]
        if c.binary:
            self.pos = self.index[c.positive]
            self.neg = 1 - self.pos
            self.pos_name, self.neg_name = c.classes[self.pos], c.classes[self.neg]
            self.x, self.y = c.maps[c.positive]
            children += [metrics["estimated_confusion"].labels(*labels, cell) for cell in CELLS]
            children.append(metrics["estimated_positive_variance"].labels(*labels))
        else:
            self.maps = [c.maps[name] for name in c.classes]
            children += [metrics["estimated_class_confusion"].labels(*labels, p, a)
                         for p in c.classes for a in c.classes]
        self.children = children
        self.sums: list[float] = [0.0] * len(children)
        self.done = self.sums[:]

    # -- one row (called under the monitor's lock) -------------------------------

    def add(self, prediction: Any, probabilities: Any) -> None:
        """Add one row's expected outcome; unusable input counts as invalid."""
        s = self.sums
        j = self.index.get(prediction) if type(prediction) is str else self.index.get(category_key(prediction))
        if j is None:
            s[INVALID] += 1
            return
        if self.k != 2:
            self._add_general(j, probabilities)
            return
        # the binary fast path: a dict keyed by the class names, or a tuple or list in class order
        kind = type(probabilities)
        try:
            if kind is dict:
                q, qn = probabilities[self.pos_name], probabilities[self.neg_name]
            elif kind is tuple or kind is list:
                q, qn = probabilities[self.pos], probabilities[self.neg]
            else:
                raise TypeError
            if not (0.0 <= q <= 1.0 and 0.0 <= qn <= 1.0 and LOW <= q + qn - 1.0 <= HIGH):
                s[INVALID] += 1
                return
        except (KeyError, IndexError, TypeError, ValueError):  # keyed otherwise (1 for "1"), an array, or unusable
            self._add_general(j, probabilities)
            return
        self._add_binary(j, interpolate(self.x, self.y, q))

    def _add_binary(self, j: int, q: float) -> None:
        s = self.sums
        if j == self.pos:
            v = q * (1.0 - q)
            s[TP] += q
            s[FP] += 1.0 - q
            s[POSITIVE_VARIANCE] += v
            s[CORRECT] += q
        else:
            v = q * (1.0 - q)
            s[FN] += q
            s[TN] += 1.0 - q
            s[CORRECT] += 1.0 - q
        s[ROWS] += 1
        s[VARIANCE] += v

    def _rekeyed(self, probabilities: Any) -> list[float] | None:
        """Probabilities in the class order, from a mapping (keys as the classes are keyed) or a
        sequence; None if unusable."""
        try:
            if isinstance(probabilities, Mapping):
                by_key = {category_key(k): v for k, v in probabilities.items()}
                p = [float(by_key[name]) for name in self.classes]
            else:
                p = [float(v) for v in probabilities]
        except (KeyError, TypeError, ValueError):
            return None
        if len(p) != self.k or not all(0.0 <= v <= 1.0 for v in p) or not LOW <= sum(p) - 1.0 <= HIGH:
            return None
        return p

    def _add_general(self, j: int, probabilities: Any) -> bool:
        s = self.sums
        p = self._rekeyed(probabilities)
        if p is None:
            s[INVALID] += 1
            return False
        if self.k == 2:
            self._add_binary(j, interpolate(self.x, self.y, p[self.pos]))
            return True
        calibrated = [interpolate(x, y, v) for (x, y), v in zip(self.maps, p)]
        total = sum(calibrated)
        if total <= 0.0:
            calibrated, total = p, 1.0
        c = calibrated[j] / total
        s[ROWS] += 1
        s[CORRECT] += c
        s[VARIANCE] += c * (1.0 - c)
        base = 4 + j * self.k
        for a, value in enumerate(calibrated):
            s[base + a] += value / total
        return True

    # -- a batch (computed outside the lock, added under it) ----------------------

    def batch(self, predictions: Any, probabilities: Any, n: int) -> list[float]:
        """The sums' increments for a batch: ``probabilities`` an n x k array in the class
        order, or a mapping class -> array."""
        delta = [0.0] * len(self.sums)
        j = self._predicted(predictions, n)
        p = self._matrix(probabilities, n)
        if j is None or p is None:
            delta[INVALID] = n
            return delta
        with np.errstate(all="ignore"):
            usable = ((j >= 0) & np.isfinite(p).all(axis=1) & (p >= 0).all(axis=1) & (p <= 1).all(axis=1)
                      & (np.abs(p.sum(axis=1) - 1) <= TOLERANCE))
        m = int(usable.sum())
        delta[INVALID] = n - m
        if m == 0:
            return delta
        j, cal = j[usable], self.calibration.calibrate(p[usable])
        c = cal[np.arange(m), j]
        v = c * (1.0 - c)
        delta[ROWS], delta[CORRECT], delta[VARIANCE] = m, float(c.sum()), float(v.sum())
        if self.k == 2:
            q = cal[:, self.pos]
            predicted_positive = j == self.pos
            delta[TP] = float(q[predicted_positive].sum())
            delta[FP] = float((1.0 - q[predicted_positive]).sum())
            delta[FN] = float(q[~predicted_positive].sum())
            delta[TN] = float((1.0 - q[~predicted_positive]).sum())
            delta[POSITIVE_VARIANCE] = float(v[predicted_positive].sum())
        else:
            for a in range(self.k):  # column a of the expected confusion, by predicted class
                column = np.bincount(j, weights=cal[:, a], minlength=self.k)
                for pi in range(self.k):
                    delta[4 + pi * self.k + a] = float(column[pi])
        return delta

    def _predicted(self, predictions: Any, n: int) -> np.ndarray | None:
        """Class index of each row's prediction, -1 where not a class."""
        try:
            values = np.asarray(predictions)
            if values.shape != (n,):
                return None
            distinct, inverse = np.unique(values, return_inverse=True)
            lookup = np.array([self.index.get(category_key(v), -1) for v in distinct.tolist()], dtype=np.int64)
            return lookup[inverse.reshape(-1)]
        except TypeError:  # mixed types numpy cannot sort
            keys = [category_key(v) for v in list(predictions)]
            return np.array([self.index.get(k, -1) for k in keys], dtype=np.int64) if len(keys) == n else None

    def _matrix(self, probabilities: Any, n: int) -> np.ndarray | None:
        try:
            if isinstance(probabilities, Mapping):
                by_key = {category_key(k): v for k, v in probabilities.items()}
                p = np.column_stack([np.asarray(by_key[name], dtype=np.float64) for name in self.classes])
            else:
                p = np.asarray(probabilities, dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return None
        return p if p.shape == (n, self.k) else None

    def add_batch(self, delta: list[float]) -> None:
        """Add a batch's increments (under the monitor's lock)."""
        s = self.sums
        for i, d in enumerate(delta):
            if d:
                s[i] += d

    # -- folding into prometheus-client ------------------------------------------

    def flush(self, sums: list[float]) -> None:
        """Fold ``sums`` (a copy taken under the lock) into the counters."""
        done = self.done
        for i, (child, new) in enumerate(zip(self.children, sums)):
            if new != done[i]:
                if new > done[i]:
                    child.inc(new - done[i])
                done[i] = new

    def mark_flushed(self) -> None:
        self.done = self.sums[:]
