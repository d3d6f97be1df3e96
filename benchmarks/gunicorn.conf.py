"""gunicorn settings of the service benchmark: the demo's, with each variant's server hooks.

The address comes from the command line (``--bind``), the variant from ``BENCH_VARIANT``.
"""
import os
import runpy
from pathlib import Path

_demo = runpy.run_path(str(Path(__file__).resolve().parent.parent / "demo" / "gunicorn.conf.py"))
workers, timeout = _demo["workers"], _demo["timeout"]
_variant = os.environ.get("BENCH_VARIANT", "bare")

if _variant in ("modelmon", "demo"):
    on_starting, child_exit = _demo["on_starting"], _demo["child_exit"]
elif _variant == "prometheus-flask-exporter":
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    def child_exit(server, worker):
        GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
