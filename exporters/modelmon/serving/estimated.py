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

from bisect import bisect_right
from typing import Any, Mapping

import numpy as np

from .bins import category_key
from .calibration import TOLERANCE, Calibration, interpolate

# The running sums. Binary models keep, per side of the prediction, the rows, the sum of the
# calibrated positive probability q and the sum of q (1 - q): three additions a row, from which
# flush derives every counter (tp = sum q over rows predicted positive, fp = their rows - tp, ...).
INVALID = 0
POS_ROWS, POS_Q, POS_VARIANCE, NEG_ROWS, NEG_Q, NEG_VARIANCE = range(1, 7)
# Multiclass models: rows, expected correct, its variance, then the k x k expected confusion.
ROWS, CORRECT, VARIANCE = 1, 2, 3
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
            self.last = len(self.x)
            children += [metrics["estimated_confusion"].labels(*labels, cell) for cell in CELLS]
            children.append(metrics["estimated_positive_variance"].labels(*labels))
            self.sums: list[float] = [0.0] * 7
        else:
            self.maps = [c.maps[name] for name in c.classes]
            children += [metrics["estimated_class_confusion"].labels(*labels, p, a)
                         for p in c.classes for a in c.classes]
            self.sums = [0.0] * (4 + self.k * self.k)
        self.children = children
        self.done = self.totals(self.sums)

    def totals(self, sums: list[float]) -> list[float]:
        """The counters' values (in the order of ``children``) from a copy of the running sums."""
        if self.k == 2:
            tp, fn = sums[POS_Q], sums[NEG_Q]
            fp, tn = sums[POS_ROWS] - tp, sums[NEG_ROWS] - fn
            return [sums[POS_ROWS] + sums[NEG_ROWS], tp + tn, sums[POS_VARIANCE] + sums[NEG_VARIANCE],
                    sums[INVALID], tp, fp, fn, tn, sums[POS_VARIANCE]]
        return [sums[ROWS], sums[CORRECT], sums[VARIANCE], sums[INVALID], *sums[4:]]

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
        x, y = self.x, self.y  # interpolate(), inlined
        i = bisect_right(x, q)
        if i == 0:
            q = y[0]
        elif i == self.last:
            q = y[-1]
        else:
            x0, y0 = x[i - 1], y[i - 1]
            q = y0 + (y[i] - y0) * (q - x0) / (x[i] - x0)
        if j == self.pos:
            s[POS_ROWS] += 1
            s[POS_Q] += q
            s[POS_VARIANCE] += q * (1.0 - q)
        else:
            s[NEG_ROWS] += 1
            s[NEG_Q] += q
            s[NEG_VARIANCE] += q * (1.0 - q)

    def _add_binary(self, j: int, q: float) -> None:
        s = self.sums
        if j == self.pos:
            s[POS_ROWS] += 1
            s[POS_Q] += q
            s[POS_VARIANCE] += q * (1.0 - q)
        else:
            s[NEG_ROWS] += 1
            s[NEG_Q] += q
            s[NEG_VARIANCE] += q * (1.0 - q)

    def _rekeyed(self, probabilities: Any) -> list[float] | None:
        """Probabilities in the class order, from a mapping (keys as the classes are keyed) or a
        sequence; None if unusable."""
        try:
            if type(probabilities) is dict:
                try:  # keyed by the class names, as usual
                    p = [float(probabilities[name]) for name in self.classes]
                except KeyError:
                    by_key = {category_key(k): v for k, v in probabilities.items()}
                    p = [float(by_key[name]) for name in self.classes]
            elif isinstance(probabilities, Mapping):
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
        scale = 1.0 / total
        for a in range(self.k):
            s[base + a] += calibrated[a] * scale
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
        if self.k == 2:
            q = cal[:, self.pos]
            v = q * (1.0 - q)
            positive = j == self.pos
            delta[POS_ROWS], delta[NEG_ROWS] = int(positive.sum()), int(m - positive.sum())
            delta[POS_Q], delta[NEG_Q] = float(q[positive].sum()), float(q[~positive].sum())
            delta[POS_VARIANCE], delta[NEG_VARIANCE] = float(v[positive].sum()), float(v[~positive].sum())
            return delta
        c = cal[np.arange(m), j]
        delta[ROWS], delta[CORRECT], delta[VARIANCE] = m, float(c.sum()), float((c * (1.0 - c)).sum())
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
        for i, (child, new) in enumerate(zip(self.children, self.totals(sums))):
            if new != done[i]:
                if new > done[i]:
                    child.inc(new - done[i])
                done[i] = new

    def mark_flushed(self) -> None:
        self.done = self.totals(self.sums)
