"""modelmon: ops and data-science monitoring for models in production.

The package in three layers, each importing only the ones before it:
``serving`` (the request's hot path: metrics, bins, reference, outcomes, exposition),
``pipeline`` (prediction events to files and on to Elasticsearch) and ``analysis``
(``modelmon report`` and ``modelmon skew``, offline). On top: ``monitor``
(``ModelMonitor``), the framework adapters (``flask``, ``asgi``, ``gunicorn``,
``uvicorn``) and the command line (``cli``).
"""
from .monitor import ModelMonitor
from .serving.exposition import metrics_payload, start_http_server
from .serving.feedback import FeedbackLimits, record_labels
from .serving.metrics import CONTRACT, exported_samples
from .serving.reference import Reference, ReferenceFileError
from .serving.worker_files import MetricsDirectory

__all__ = [
    "CONTRACT",
    "FeedbackLimits",
    "MetricsDirectory",
    "ModelMonitor",
    "Reference",
    "ReferenceFileError",
    "exported_samples",
    "metrics_payload",
    "record_labels",
    "start_http_server",
]
