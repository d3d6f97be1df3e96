"""The metric contract: every name modelmon exports is defined here, once.

Rules, dashboards and saved objects are checked against ``CONTRACT`` by the tests.
``MetricSet`` holds the prometheus-client objects of one registry; it is itself the
collector registered there, so a scrape first folds the monitors' pending counts
into the metrics and then reports them.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics_core import Metric

from .errors import InternalErrors

MODEL = ("model", "version")

# The summaries of feature and prediction values are split by sign: increase() reads any
# decrease of a counter as a reset, so a running sum of values that can be negative must
# never decrease. ``sign="positive"`` counts the finite values >= 0 (zero and -0.0
# included) and sums them; ``sign="negative"`` counts the values < 0 and sums their
# magnitudes. A mean is (sum{positive} - sum{negative}) / sum over sign of count.
SIGN = "sign"
POSITIVE, NEGATIVE = "positive", "negative"
SIGNS = (POSITIVE, NEGATIVE)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: its base name (as prometheus-client takes it), type and labels."""

    name: str
    kind: str  # counter | gauge | histogram | summary
    labels: tuple[str, ...]
    help: str
    multiprocess_mode: str = "livemax"  # gauges only: constants written by every worker

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names this family puts on the wire."""
        if self.kind == "counter":
            return (self.name + "_total",)
        if self.kind == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count"))
        if self.kind == "summary":
            return (self.name + "_sum", self.name + "_count")
        return (self.name,)


CONTRACT: tuple[MetricSpec, ...] = (
    MetricSpec("modelmon_predictions", "counter", MODEL, "Rows scored by the model."),
    MetricSpec(
        "modelmon_prediction_errors", "counter", MODEL + ("error",), "Predict calls that raised, by exception class."
    ),
    MetricSpec("modelmon_prediction_duration_seconds", "histogram", MODEL, "Time spent in predict per call."),
    MetricSpec(
        "modelmon_http_requests", "counter", ("handler", "method", "status"), "HTTP requests by route template."
    ),
    MetricSpec(
        "modelmon_http_request_duration_seconds", "histogram", ("handler", "method"), "HTTP request duration."
    ),
    MetricSpec("modelmon_http_requests_in_progress", "gauge", (), "HTTP requests being served.", "livesum"),
    MetricSpec("modelmon_model_info", "gauge", MODEL + ("reference",), "Model loaded; reference = profile hash."),
    MetricSpec("modelmon_model_trained_timestamp_seconds", "gauge", MODEL, "When the model was trained (Unix time)."),
    MetricSpec("modelmon_model_loaded_timestamp_seconds", "gauge", MODEL, "When this process loaded the model."),
    MetricSpec("modelmon_dependency_info", "gauge", ("package", "version"), "Installed version of a dependency."),
    MetricSpec("modelmon_feature_bin", "counter", MODEL + ("feature", "bin"), "Feature values per reference bin."),
    MetricSpec(
        "modelmon_feature_value", "summary", MODEL + ("feature", SIGN),
        "Finite values of numeric features by sign; _sum adds magnitudes.",
    ),
    MetricSpec("modelmon_feature_tokens", "counter", MODEL + ("feature",), "Tokens seen in text features."),
    MetricSpec(
        "modelmon_feature_unknown_tokens", "counter", MODEL + ("feature",), "Text tokens not in the reference vocabulary."
    ),
    MetricSpec("modelmon_prediction_bin", "counter", MODEL + ("output", "bin"), "Predictions per reference bin."),
    MetricSpec(
        "modelmon_prediction_value", "summary", MODEL + ("output", SIGN),
        "Finite values of numeric outputs by sign; _sum adds magnitudes.",
    ),
    MetricSpec(
        "modelmon_reference_bin_ratio", "gauge", MODEL + ("feature", "bin"), "Share of training rows per bin."
    ),
    MetricSpec(
        "modelmon_reference_prediction_bin_ratio",
        "gauge",
        MODEL + ("output", "bin"),
        "Share of training predictions per bin.",
    ),
    MetricSpec(
        "modelmon_reference_unknown_token_ratio",
        "gauge",
        MODEL + ("feature",),
        "Share of training tokens outside the vocabulary.",
    ),
    MetricSpec("modelmon_reference_mean", "gauge", MODEL + ("feature",), "Training mean of a numeric feature."),
    MetricSpec("modelmon_reference_stddev", "gauge", MODEL + ("feature",), "Training standard deviation."),
    MetricSpec(
        "modelmon_reference_prediction_mean", "gauge", MODEL + ("output",), "Training mean of a numeric output."
    ),
    MetricSpec(
        "modelmon_reference_prediction_stddev", "gauge", MODEL + ("output",), "Training stddev of a numeric output."
    ),
    MetricSpec(
        "modelmon_alert_threshold", "gauge", MODEL + ("alert",), "Per-model alert threshold overriding the default."
    ),
    MetricSpec("modelmon_outcomes", "counter", MODEL, "Delayed labels joined to their prediction."),
    MetricSpec("modelmon_outcomes_correct", "counter", MODEL, "Joined labels equal to the predicted class."),
    MetricSpec("modelmon_outcome_absolute_error", "summary", MODEL, "Absolute error of joined numeric labels."),
    MetricSpec("modelmon_outcome_squared_error", "summary", MODEL, "Squared error of joined numeric labels."),
    MetricSpec(
        "modelmon_outcomes_unmatched", "counter", MODEL + ("reason",), "Labels not joined (unknown_id, expired)."
    ),
    MetricSpec(
        "modelmon_reference_score", "gauge", MODEL + ("metric",),
        "Held-out score of the model (accuracy, mae; precision, recall, f1 of a calibrated binary model).",
    ),
    # Confidence-based performance estimation (issue 15, estimated.py): sums over the rows
    # observed with class probabilities, mapped through the reference's calibration.
    MetricSpec("modelmon_estimated", "counter", MODEL, "Rows observed with usable class probabilities."),
    MetricSpec(
        "modelmon_estimated_correct", "counter", MODEL,
        "Sum of the calibrated probability of the predicted class: expected correct rows.",
    ),
    MetricSpec(
        "modelmon_estimated_correct_variance", "counter", MODEL,
        "Sum of c * (1 - c) of the calibrated probability c of the predicted class.",
    ),
    MetricSpec(
        "modelmon_estimated_confusion", "counter", MODEL + ("cell",),
        "Binary models: expected true/false positives/negatives (cell tp, fp, fn, tn) of the positive class.",
    ),
    MetricSpec(
        "modelmon_estimated_positive_variance", "counter", MODEL,
        "Binary models: sum of q * (1 - q) of the calibrated positive probability q over rows predicted positive.",
    ),
    MetricSpec(
        "modelmon_estimated_class_confusion", "counter", MODEL + ("predicted", "actual"),
        "Multiclass models: expected rows by predicted and actual class (calibrated probabilities summed).",
    ),
    MetricSpec(
        "modelmon_estimated_invalid", "counter", MODEL,
        "Rows whose class probabilities were unusable (missing, not summing to 1, unknown predicted class).",
    ),
    MetricSpec("modelmon_internal_errors", "counter", ("stage",), "Monitoring failures, swallowed and counted."),
)

# The log shipper's own metrics (modelmon ship, served on its --metrics-port).
SHIPPER_CONTRACT: tuple[MetricSpec, ...] = (
    MetricSpec("modelmon_shipper_documents_indexed", "counter", (), "Events indexed into Elasticsearch."),
    MetricSpec(
        "modelmon_shipper_documents_duplicate", "counter", (), "Events Elasticsearch already had (409 on create)."
    ),
    MetricSpec(
        "modelmon_shipper_documents_rejected", "counter", (), "Events Elasticsearch refused, sent to the dead letters."
    ),
    MetricSpec(
        "modelmon_shipper_documents_retried", "counter", (), "Event sends repeated after a transient failure."
    ),
    MetricSpec(
        "modelmon_shipper_documents_corrupt", "counter", (), "Lines not a JSON object, sent to the dead letters."
    ),
    MetricSpec(
        "modelmon_shipper_lost_bytes", "counter", (), "Bytes of event files deleted or truncated before being shipped."
    ),
    MetricSpec("modelmon_shipper_lost_files", "counter", (), "Event files deleted or truncated before fully shipped."),
    MetricSpec("modelmon_shipper_backlog_bytes", "gauge", (), "Bytes in the event files not shipped yet."),
    MetricSpec("modelmon_shipper_lag_seconds", "gauge", (), "Now minus the @timestamp of the last event shipped."),
)


# Alerts whose threshold a monitor may set per model (exported as
# modelmon_alert_threshold{alert=...}); the values are the rules' defaults.
ALERT_THRESHOLDS: dict[str, float] = {
    "ModelmonFeatureDrift": 0.2,  # PSI
    "ModelmonPredictionDrift": 0.2,  # PSI
    "ModelmonFeatureMissing": 0.05,  # missing share above the reference's
    "ModelmonUnseenCategories": 0.05,  # unseen share above the reference's
    "ModelmonOutOfRange": 0.05,  # below + above share over the reference's
    "ModelmonFeatureMeanShift": 4.5,  # standard errors of the mean (docs/alerting.md, Detection)
    "ModelmonPredictionMeanShift": 3.0,  # standard errors of the mean
    "ModelmonHighErrorRate": 0.05,  # errors per prediction
    "ModelmonHighLatency": 0.5,  # p95 seconds
    "ModelmonModelStale": 30 * 86400.0,  # model age, seconds
    "ModelmonQualityDrop": 0.1,  # relative drop against the reference score
    "ModelmonEstimatedQualityDrop": 0.1,  # relative drop of the estimated accuracy against the hold-out's
}

# ModelmonPredictionMeanShift also needs the shift to be at least this many training
# standard deviations (Cohen's "small" d): significance alone grows with traffic.
MEAN_SHIFT_MIN_EFFECT = 0.2

# Stages of modelmon_internal_errors_total: a closed set, so the label stays bounded.
STAGES = ("input", "observe", "flush", "http", "log", "outcome", "feedback")


def _build(spec: MetricSpec):
    common = dict(name=spec.name, documentation=spec.help, labelnames=spec.labels, registry=None)
    if spec.kind == "counter":
        return Counter(**common)
    if spec.kind == "gauge":
        return Gauge(**common, multiprocess_mode=spec.multiprocess_mode)
    if spec.kind == "histogram":
        return Histogram(**common, buckets=LATENCY_BUCKETS)
    return Summary(**common)


class Monitor(Protocol):
    """What a MetricSet needs of a monitor feeding it (``ModelMonitor`` is one)."""

    model: str
    version: str

    def flush(self) -> None: ...

    def after_fork(self) -> None: ...


class MetricSet:
    """The modelmon metrics of one registry and the monitors feeding them."""

    def __init__(self) -> None:
        self.by_name = {spec.name: _build(spec) for spec in CONTRACT}
        self.errors = InternalErrors(self["internal_errors"], STAGES)
        self.monitors: dict[tuple[str, str], Monitor] = {}
        self.lock = threading.Lock()

    def __getitem__(self, short_name: str):
        """The metric object of ``modelmon_<short_name>``."""
        return self.by_name["modelmon_" + short_name]

    def add_monitor(self, monitor: Monitor) -> None:
        key = (monitor.model, monitor.version)
        with self.lock:
            if key in self.monitors:
                raise ValueError(f"a monitor for model {key[0]!r} version {key[1]!r} exists in this registry already")
            self.monitors[key] = monitor

    def remove_monitor(self, monitor: Monitor) -> None:
        with self.lock:
            self.monitors.pop((monitor.model, monitor.version), None)

    def flush(self) -> None:
        with self.lock:
            monitors = list(self.monitors.values())
        for monitor in monitors:
            monitor.flush()

    def describe(self) -> Iterable[Metric]:
        for metric in self.by_name.values():
            yield from metric.describe()

    def collect(self) -> Iterator[Metric]:
        self.flush()
        for metric in self.by_name.values():
            yield from metric.collect()


_sets: "weakref.WeakKeyDictionary[CollectorRegistry, MetricSet]" = weakref.WeakKeyDictionary()
_sets_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry | None = None) -> MetricSet:
    """The MetricSet of a registry (default: prometheus-client's), created on first use."""
    registry = REGISTRY if registry is None else registry
    with _sets_lock:
        metric_set = _sets.get(registry)
        if metric_set is None:
            metric_set = MetricSet()
            registry.register(metric_set)
            _sets[registry] = metric_set
        return metric_set


def flush_all() -> None:
    """Fold every monitor's pending counts of this process into its metrics."""
    with _sets_lock:
        sets = list(_sets.values())
    for metric_set in sets:
        metric_set.flush()


def exported_samples() -> set[str]:
    """Every sample name modelmon can put on the wire (for rule and dashboard checks)."""
    return {name for spec in CONTRACT + SHIPPER_CONTRACT for name in spec.samples}


def after_fork() -> bool:
    """In a forked child: fresh locks; the parent's pending counts stay the parent's.

    Returns whether this process has monitors (and so needs a flush timer).
    """
    global _sets_lock
    _sets_lock = threading.Lock()
    found = False
    for metric_set in list(_sets.values()):
        metric_set.lock = threading.Lock()
        for monitor in metric_set.monitors.values():
            monitor.after_fork()
            found = True
    return found
