# gunicorn settings of the demo service; PROMETHEUS_MULTIPROC_DIR must be set.
from modelmon.gunicorn import child_exit, on_starting  # noqa: F401

bind = "0.0.0.0:8000"
workers = 3
timeout = 30
# Recycle workers as busy services do (the usual guard against leaks): child_exit folds
# each dead worker's metrics files, so the directory and the scrape stay bounded.
max_requests = 2000
max_requests_jitter = 200
