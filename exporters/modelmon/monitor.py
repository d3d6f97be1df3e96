"""ModelMonitor: what a model service calls on every prediction.

The hot path only bins values into plain per-process lists under one lock; ``flush``
folds the increments into the prometheus-client metrics in bulk (on every scrape,
and on a short timer in multiprocess mode). Nothing here raises into the caller:
bad input lands in a bin or in ``modelmon_internal_errors_total``.
"""
from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
from prometheus_client import CollectorRegistry

from .pipeline.events import EventLog
from .serving import multiprocess
from .serving.bins import SUM_SLOTS, Bins, CategoricalBins, NumericBins, RowFlags, TextBins
from .serving.estimated import Estimator
from .serving.metrics import ALERT_THRESHOLDS, NEGATIVE, POSITIVE, metrics_for
from .serving.outcomes import OutcomeStore, OutcomeTracker
from .serving.reference import ColumnProfile, Reference
from .serving.stores import open_store

log = logging.getLogger("modelmon")

DEFAULT_DEPENDENCIES = (
    "modelmon", "numpy", "pandas", "scipy", "scikit-learn", "xgboost", "lightgbm", "torch", "tensorflow",
)
MAX_ERROR_LABELS = 20


class ModelMonitor:
    """Monitors one model version: inputs and outputs against its reference profile."""

    def __init__(
        self,
        model: str,
        version: str,
        reference: str | os.PathLike | Reference,
        *,
        registry: CollectorRegistry | None = None,
        dependencies: Iterable[str] = DEFAULT_DEPENDENCIES,
        thresholds: Mapping[str, float] | None = None,
        events: EventLog | None = None,
        outcomes: OutcomeStore | str | os.PathLike | None = None,
    ):
        store = open_store(outcomes)  # a bad URL or path fails here, before anything is exported
        ref = reference if isinstance(reference, Reference) else Reference.load(Path(reference))
        unknown = set(thresholds or {}) - set(ALERT_THRESHOLDS)
        if unknown:
            raise ValueError(f"thresholds for unknown alerts {sorted(unknown)}; known: {sorted(ALERT_THRESHOLDS)}")
        self.model, self.version, self.reference = str(model), str(version), ref
        self._metrics = metrics_for(registry)
        self._errors = self._metrics.errors
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counts: list[int] = []
        self._sums: list[float] = []  # SUM_SLOTS per numeric column: see bins.py
        self._rows = 0
        self._features = self._binners(ref.features, self._counts, self._sums)
        self._outputs = self._binners(ref.outputs, self._counts, self._sums)
        self._feature_adds = [(name, b.add) for name, b in self._features.items()]
        self._feature_names = list(self._features)
        self._known = frozenset(self._features)
        self._events = events
        self._scratch: tuple[dict[str, Bins], dict[str, Bins]] | None = None
        if events is not None:
            events.on_error = lambda exc: self._errors.count("log", exc)
            self._flags = RowFlags(self._features, self._outputs)
        # expected outcomes of rows observed with class probabilities (estimated.py)
        self._estimator = Estimator(ref.calibration, self._metrics, (self.model, self.version)) \
            if ref.calibration is not None else None
        self._children()
        self._mark_flushed()
        self._tracker = None
        if self._outputs:
            self._tracker_output, first = next(iter(self._outputs.items()))
            self._tracker = OutcomeTracker(self.model, self.version, isinstance(first, CategoricalBins),
                                           store,
                                           self._metrics, self._errors)
        self._error_labels: set[str] = set()
        self._metrics.add_monitor(self)
        self._export_constants(dependencies, thresholds or {})
        multiprocess.start_flusher()

    # -- set-up -----------------------------------------------------------------

    @staticmethod
    def _binners(profiles: Mapping[str, ColumnProfile], counts: list, sums: list) -> dict[str, Bins]:
        """Binners appending their slots to ``counts`` (and signed sums to ``sums`` for numeric ones)."""
        binners: dict[str, Bins] = {}
        for name, profile in profiles.items():
            offset = len(counts)
            if profile.kind == "numeric":
                binners[name] = NumericBins(profile.edges, counts, sums, offset, len(sums))
                sums.extend([0.0, 0.0, 0])
            elif profile.kind == "text":
                binners[name] = TextBins(profile.edges, profile.vocabulary, counts, sums, offset, len(sums))
                sums.extend([0.0, 0.0, 0])
            else:
                binners[name] = CategoricalBins(profile.categories, counts, offset)
            counts.extend([0] * binners[name].slots)
        return binners

    def _children(self) -> None:
        """Pre-create every series, so each bin exists (at 0) from the first scrape."""
        m, labels = self._metrics, (self.model, self.version)
        self._bin_children = []
        # (sign="positive" child, sign="negative" child, first slot, end of finite slots, sum index)
        self._value_children = []
        for binners, bins_metric, value_metric in (
            (self._features, m["feature_bin"], m["feature_value"]),
            (self._outputs, m["prediction_bin"], m["prediction_value"]),
        ):
            for name, binner in binners.items():
                self._bin_children += [bins_metric.labels(*labels, name, b) for b in binner.labels]
                if isinstance(binner, TextBins):  # its token slots follow the bins
                    self._bin_children += [m["feature_tokens"].labels(*labels, name),
                                           m["feature_unknown_tokens"].labels(*labels, name)]
                if isinstance(binner, NumericBins):
                    finite_end = binner.missing  # in-range bins, then below and above
                    self._value_children.append((value_metric.labels(*labels, name, POSITIVE),
                                                 value_metric.labels(*labels, name, NEGATIVE),
                                                 binner.offset, finite_end, binner.sum_index))
        self._rows_child = m["predictions"].labels(*labels)
        self._duration_child = m["prediction_duration_seconds"].labels(*labels)

    def _export_constants(self, dependencies: Iterable[str], thresholds: Mapping[str, float]) -> None:
        m, labels, ref = self._metrics, (self.model, self.version), self.reference
        m["model_info"].labels(*labels, ref.hash).set(1)
        m["model_trained_timestamp_seconds"].labels(*labels).set(ref.trained_at.timestamp())
        m["model_loaded_timestamp_seconds"].labels(*labels).set(time.time())
        for profiles, ratio, mean, stddev in (
            (ref.features, m["reference_bin_ratio"], m["reference_mean"], m["reference_stddev"]),
            (ref.outputs, m["reference_prediction_bin_ratio"], m["reference_prediction_mean"],
             m["reference_prediction_stddev"]),
        ):
            for name, profile in profiles.items():
                for label, share in profile.shares.items():
                    ratio.labels(*labels, name, label).set(share)
                if profile.unknown_token_share is not None:
                    m["reference_unknown_token_ratio"].labels(*labels, name).set(profile.unknown_token_share)
                if profile.mean is not None:
                    mean.labels(*labels, name).set(profile.mean)
                    stddev.labels(*labels, name).set(profile.stddev or 0.0)
        for metric, score in ref.evaluation.items():
            m["reference_score"].labels(*labels, metric).set(score)
        for alert, value in thresholds.items():
            m["alert_threshold"].labels(*labels, alert).set(float(value))
        for package in dependencies:
            try:
                m["dependency_info"].labels(package, importlib.metadata.version(package)).set(1)
            except importlib.metadata.PackageNotFoundError:
                if package not in DEFAULT_DEPENDENCIES:
                    log.warning("modelmon: dependency %r is not installed; not exported", package)

    # -- hot path ---------------------------------------------------------------

    def observe(self, features: Mapping[str, Any], prediction: Any, *, prediction_id: str | None = None,
                trace_id: str | None = None, duration: float | None = None, probabilities: Any = None) -> None:
        """Record one scored row: its input features and its prediction.

        ``prediction`` is a number or class label, or a mapping of output name to value
        for models with several outputs. ``duration`` (seconds) feeds the latency
        histogram when the caller timed predict itself. ``prediction_id`` and
        ``trace_id`` identify the row's event (and later its delayed label).
        ``probabilities`` (a mapping class -> probability, or a sequence in the
        reference's class order) feeds the estimated quality of a calibrated reference.
        """
        try:
            with self._lock:
                self._rows += 1
                slots = self._observe_features(features)
                out_slots = self._observe_prediction(prediction) if self._outputs else []
                if probabilities is not None:
                    if type(prediction) is str and self._estimator is not None:  # the common case, fast
                        self._estimator.add(prediction, probabilities)
                    else:
                        self._estimate(prediction, probabilities)
            if prediction_id is not None and self._tracker is not None:
                primary = prediction.get(self._tracker_output) if isinstance(prediction, Mapping) else prediction
                self._tracker.remember(prediction_id, primary)
            if duration is not None:
                self._duration_child.observe(duration)
        except Exception as exc:
            self._errors.count("observe", exc)
            return
        if self._events is not None:
            self._log_row(features, prediction, slots, out_slots, prediction_id, trace_id, duration)

    def _estimate(self, prediction: Any, probabilities: Any) -> None:
        if self._estimator is None:
            self._errors.count("input", f"probabilities given, but the reference of {self.model} has no "
                                        "calibration (profile it with a hold-out set)")
            return
        if isinstance(prediction, Mapping):
            prediction = prediction.get(self._tracker_output) if self._outputs else None
        self._estimator.add(prediction, probabilities)

    def _observe_features(self, features: Mapping[str, Any]) -> list[int]:
        try:
            get = features.get
            unknown = not (features.keys() <= self._known)
        except (AttributeError, TypeError):
            self._errors.count("input", f"features must be a mapping, got {type(features).__name__}")
            return []
        slots = [add(get(name)) for name, add in self._feature_adds]
        if unknown:
            extra = sorted(map(str, features.keys() - self._known))[:5]
            self._errors.count("input", f"features not in the reference of {self.model} (ignored): {extra}")
        return slots

    def _observe_prediction(self, prediction: Any) -> list[int]:
        if isinstance(prediction, Mapping):
            slots = [binner.add(prediction.get(name)) for name, binner in self._outputs.items()]
            if not prediction.keys() <= self._outputs.keys():
                self._errors.count("input", f"prediction has outputs not in the reference: {list(prediction)[:5]}")
            return slots
        if len(self._outputs) == 1:
            return [next(iter(self._outputs.values())).add(prediction)]
        self._errors.count("input", f"prediction must map each of {list(self._outputs)} to a value")
        return []

    def _by_output(self, prediction: Any) -> Mapping[str, Any]:
        """A prediction (or a batch's column of them) by output name: a bare value is the only output's."""
        if isinstance(prediction, Mapping):
            return prediction
        return {next(iter(self._outputs)) if len(self._outputs) == 1 else "prediction": prediction}

    def _log_row(self, features: Any, prediction: Any, slots: list[int], out_slots: list[int],
                 prediction_id: str | None, trace_id: str | None, duration: float | None) -> None:
        """Write the row's event if it is anomalous or sampled."""
        try:
            flags = self._flags.features(self._feature_names, slots)
            nonfinite = self._flags.nonfinite(out_slots)
            if not (nonfinite or any(flags.values()) or self._events.sampled()):
                return
            self._events.write(
                model=self.model, version=self.version, reference=self.reference.hash,
                inputs=features, outputs=self._by_output(prediction), flags=flags,
                nonfinite_prediction=nonfinite, prediction_id=prediction_id, trace_id=trace_id, duration=duration,
            )
        except Exception as exc:
            self._errors.count("log", exc)

    def observe_batch(self, features: Any, predictions: Any, *, prediction_ids: Any = None,
                      duration: float | None = None, probabilities: Any = None) -> None:
        """Record a batch: a DataFrame or mapping of column to array, and its predictions.

        ``predictions`` is an array (one output) or a mapping of output name to array.
        Columns are binned with numpy; a column of the wrong length is skipped and
        counted as an input error. ``prediction_ids`` lets delayed labels join the rows.
        ``probabilities`` (an n x k array in the reference's class order, or a mapping
        class -> array) feeds the estimated quality of a calibrated reference.
        """
        try:
            outputs = self._by_output(predictions)
            n = self._batch_rows(features, outputs)
            if n is None:
                return
            pending = list(self._batch_counts(self._features, features, n))
            if self._outputs:
                pending += self._batch_counts(self._outputs, outputs, n)
            estimated = None
            if probabilities is not None:
                if self._estimator is None:
                    self._estimate(None, probabilities)  # counts the missing calibration
                else:
                    primary = outputs.get(self._tracker_output) if self._outputs else None
                    estimated = self._estimator.batch(primary, probabilities, n)
            with self._lock:
                self._rows += n
                if estimated is not None:
                    self._estimator.add_batch(estimated)
                counts, sums = self._counts, self._sums
                for binner, rel_counts, total in pending:
                    for i, k in enumerate(rel_counts, binner.offset):
                        if k:
                            counts[i] += k
                    if total is not None:
                        for i, part in enumerate(total, binner.sum_index):
                            if part:
                                sums[i] += part
            if duration is not None:
                self._duration_child.observe(duration)
            if prediction_ids is not None and self._tracker is not None:
                self._remember_batch(prediction_ids, outputs, n)
        except Exception as exc:
            self._errors.count("observe", exc)
            return
        if self._events is not None:
            self._log_batch(features, outputs, n)

    def _remember_batch(self, prediction_ids: Any, outputs: Mapping[str, Any], n: int) -> None:
        ids = _row_values({"ids": prediction_ids}, "ids", n)
        values = _row_values(outputs, self._tracker_output, n)
        if ids is None or values is None:
            self._errors.count("input", f"prediction_ids must have one id per row ({n})")
            return
        for prediction_id, value in zip(ids, values):
            self._tracker.remember(prediction_id, value)

    def record_outcome(self, prediction_id: str, actual: Any) -> bool:
        """Join a delayed label to the prediction made with ``prediction_id``.

        Counted in the outcome metrics under the version that made the prediction;
        returns False (and counts it unmatched) if no such prediction is waiting.
        """
        if self._tracker is None:
            self._errors.count("outcome", f"{self.model} has no outputs in its reference: no outcome to join")
            return False
        try:
            return self._tracker.record(prediction_id, actual)
        except Exception as exc:
            self._errors.count("outcome", exc)
            return False

    def _log_batch(self, features: Any, prediction_columns: Mapping[str, Any], n: int) -> None:
        """Events for a batch's anomalous and sampled rows (row by row: the slow path)."""
        try:
            if self._scratch is None:  # binners counting into throw-away lists, same slots
                counts: list[int] = []
                sums: list[float] = []
                self._scratch = (self._binners(self.reference.features, counts, sums),
                                 self._binners(self.reference.outputs, counts, sums))
            columns = {name: _row_values(features, name, n) for name in self._features}
            outputs = {name: _row_values(prediction_columns, name, n) for name in self._outputs}
            scratch_features, scratch_outputs = self._scratch
            for i in range(n):
                row = {name: values[i] for name, values in columns.items() if values is not None}
                prediction = {name: values[i] for name, values in outputs.items() if values is not None}
                slots = [b.add(row.get(name)) for name, b in scratch_features.items()]
                out_slots = [b.add(prediction.get(name)) for name, b in scratch_outputs.items()]
                self._log_row(row, prediction, slots, out_slots, None, None, None)
        except Exception as exc:
            self._errors.count("log", exc)

    def _batch_rows(self, features: Any, outputs: Mapping[str, Any]) -> int | None:
        if not (isinstance(features, Mapping) or hasattr(features, "columns")):
            self._errors.count("input", f"batch features must be a DataFrame or mapping, got {type(features).__name__}")
            return None
        try:
            lengths = {len(col) for col in outputs.values() if col is not None}
        except TypeError:
            lengths = set()
        if len(lengths) != 1:
            self._errors.count("input", "batch predictions must be an array, or a mapping of output to array")
            return None
        return lengths.pop()

    def _batch_counts(self, binners: Mapping[str, Bins], columns: Any, n: int):
        for name, binner in binners.items():
            column = columns[name] if name in columns else None
            if column is None:
                missing = [0] * binner.slots
                missing[binner.missing - binner.offset] = n
                yield binner, missing, None
                continue
            if len(column) != n:
                self._errors.count("input", f"column {name!r} has {len(column)} rows, the batch {n}")
                continue
            # Quiet: a float overflow (a float128 cast, a sum past float's range) gives inf, not a
            # RuntimeWarning on the service's stderr (np.errstate is local to this context).
            with np.errstate(all="ignore"):
                counted = binner.count_array(_unmasked(column))
            yield (binner, *counted)

    # -- timing and errors ------------------------------------------------------

    @contextmanager
    def track(self, features: Any = None, *, prediction_id: str | None = None,
              trace_id: str | None = None) -> Iterator["ModelMonitor"]:
        """Time the block as one predict call; count it as an error if it raises.

        Inside, call ``observe``/``observe_batch`` on the yielded monitor as usual. With
        event logging on, a failure is logged with ``features`` and the ids given here.
        """
        start = time.perf_counter()
        try:
            yield self
        except Exception as exc:
            self._count_prediction_error(exc)
            self._log_error(features, exc, prediction_id, trace_id, time.perf_counter() - start)
            raise
        finally:
            self._observe_duration(time.perf_counter() - start)

    def _log_error(self, features: Any, error: Exception, prediction_id: str | None, trace_id: str | None,
                   duration: float) -> None:
        if self._events is None:
            return
        try:
            self._events.write(
                model=self.model, version=self.version, reference=self.reference.hash,
                inputs=features if isinstance(features, Mapping) else None, outputs={}, flags={},
                nonfinite_prediction=False, prediction_id=prediction_id, trace_id=trace_id, duration=duration,
                error=error,
            )
        except Exception as exc:
            self._errors.count("log", exc)

    def instrument(self, fn: Callable | None = None, *, batch: bool = False) -> Callable:
        """Decorate ``predict(features, ...)``: time it, count errors, record inputs and outputs.

        With ``batch=True`` the first argument is a DataFrame or mapping of columns and
        the result an array (or mapping of arrays), recorded with ``observe_batch``.
        """
        if fn is None:
            return functools.partial(self.instrument, batch=batch)
        record = self.observe_batch if batch else self.observe

        @functools.wraps(fn)
        def wrapper(features, *args, **kwargs):
            with self.track(None if batch else features):
                result = fn(features, *args, **kwargs)
            record(features, result)
            return result

        return wrapper

    def _observe_duration(self, seconds: float) -> None:
        try:
            self._duration_child.observe(seconds)
        except Exception as exc:
            self._errors.count("observe", exc)

    def _count_prediction_error(self, exc: BaseException) -> None:
        try:
            label = type(exc).__name__
            if label not in self._error_labels:
                if len(self._error_labels) >= MAX_ERROR_LABELS:
                    label = "other"
                else:
                    self._error_labels.add(label)
            self._metrics["prediction_errors"].labels(self.model, self.version, label).inc()
        except Exception as err:
            self._errors.count("observe", err)

    # -- folding into prometheus-client ----------------------------------------

    def flush(self) -> None:
        """Add the increments since the last flush to the prometheus-client metrics.

        What was added is remembered series by series, so a flush that fails half-way
        (a full disk in multiprocess mode) neither loses nor repeats anything.
        """
        try:
            with self._flush_lock:
                with self._lock:
                    counts, sums, rows = self._counts[:], self._sums[:], self._rows
                    estimated = self._estimator.sums[:] if self._estimator is not None else None
                if estimated is not None:
                    self._estimator.flush(estimated)
                done = self._done_counts
                for j, (child, n, total) in enumerate(self._value_totals(counts, sums)):
                    done_n, done_total = self._done_values[j]
                    if n != done_n:
                        # prometheus-client has no public "add n observations" call
                        child._count.inc(n - done_n)
                        child._sum.inc(total - done_total)
                        self._done_values[j] = (n, total)
                for i, (child, new) in enumerate(zip(self._bin_children, counts)):
                    if new != done[i]:
                        child.inc(new - done[i])
                        done[i] = new
                if rows != self._done_rows:
                    self._rows_child.inc(rows - self._done_rows)
                    self._done_rows = rows
        except Exception as exc:
            self._errors.count("flush", exc)
        if self._tracker is not None:
            try:
                self._tracker.flush()
            except Exception as exc:
                self._errors.count("outcome", exc)

    def close(self) -> None:
        """Flush and stop feeding the registry (the series stay until the process ends)."""
        self.flush()
        self._metrics.remove_monitor(self)

    def after_fork(self) -> None:
        """In a forked child: fresh locks, and the parent's pending counts are the parent's."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._mark_flushed()

    def _mark_flushed(self) -> None:
        self._done_counts = self._counts[:]
        self._done_values = [(n, total) for _, n, total in self._value_totals(self._counts, self._sums)]
        self._done_rows = self._rows
        if self._estimator is not None:
            self._estimator.mark_flushed()

    def _value_totals(self, counts: list, sums: list) -> Iterator[tuple[Any, int, float]]:
        """(summary child, count, sum) of each sign of each numeric column, from the running counts.

        Values >= 0 are the column's finite values (in range, below, above) but the negative ones.
        """
        for positive, negative, start, end, s in self._value_children:
            negatives = sums[s + SUM_SLOTS - 1]
            yield positive, sum(counts[start:end]) - negatives, sums[s]
            yield negative, negatives, sums[s + 1]


def _unmasked(column: Any) -> Any:
    """A batch column numpy converts without a warning: its masked elements (numpy.ma) are
    None, missing like NaN (numpy would convert them to nan, printing a UserWarning)."""
    if isinstance(column, np.ma.MaskedArray):
        if not np.ma.is_masked(column):
            return np.ma.getdata(column)
        values = np.ma.getdata(column).astype(object)  # (filled(None) would fill with "?")
        values[np.ma.getmaskarray(column)] = None
        return values
    if isinstance(column, (list, tuple)) and any(isinstance(v, np.ma.MaskedArray) for v in column):
        return [None if isinstance(v, np.ma.MaskedArray) and np.ma.is_masked(v) else v for v in column]
    return column


def _row_values(columns: Any, name: str, n: int) -> list | None:
    """A batch column as a list of n Python values, or None if absent or mis-sized."""
    if name not in columns:
        return None
    column = columns[name]
    values = column.tolist() if hasattr(column, "tolist") else list(column)
    return values if len(values) == n else None
