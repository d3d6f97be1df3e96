"""modelmon: ops and data-science monitoring for models in production."""
from .exposition import metrics_payload, start_http_server
from .metrics import CONTRACT, exported_samples
from .monitor import ModelMonitor
from .reference import Reference, ReferenceFileError

__all__ = [
    "CONTRACT",
    "ModelMonitor",
    "Reference",
    "ReferenceFileError",
    "exported_samples",
    "metrics_payload",
    "start_http_server",
]
