# gunicorn settings of the demo service; PROMETHEUS_MULTIPROC_DIR must be set.
from modelmon.gunicorn import child_exit, on_starting  # noqa: F401

bind = "0.0.0.0:8000"
workers = 3
timeout = 30
