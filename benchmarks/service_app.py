"""The demo model service in the variants the service benchmark compares (``BENCH_VARIANT``).

- ``bare``: the demo's model and ``/predict`` route, no monitoring;
- ``prometheus-flask-exporter``: bare plus ``GunicornInternalPrometheusMetrics`` (HTTP metrics);
- ``modelmon``: bare plus modelmon's metrics (``instrument_app``, ``track``, ``observe``),
  without the demo's event log and outcome store;
- ``demo``: demo/service.py itself (metrics, a prediction event per row, SQLite outcome store).

``create()`` builds the one named by ``BENCH_VARIANT`` (gunicorn's app factory). All serve
the model and reference trained in this virtualenv into ``BENCH_BUILD``
(``python -m benchmarks.bench_service`` does that first).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable
from unittest import mock

VARIANTS = ("bare", "prometheus-flask-exporter", "modelmon", "demo")
BUILD = Path(os.environ.get("BENCH_BUILD", Path(__file__).parent / ".build"))


def build_paths() -> dict[str, Path]:
    """The demo's path constants, pointed at this virtualenv's build."""
    return {"BUILD": BUILD, "MODEL_PATH": BUILD / "model.joblib", "REFERENCE_PATH": BUILD / "reference.yaml"}


def plain_app(wrap: Callable[[Callable[[dict], float]], Callable[[dict], float]] | None = None):
    """The demo's model and /predict without monitoring; ``wrap`` decorates the scoring of a row."""
    import joblib
    import pandas as pd
    from flask import Flask, jsonify, request
    from threadpoolctl import threadpool_limits

    from demo.model import FEATURES, NUMERIC

    threadpool_limits(1)  # as the demo does
    model = joblib.load(build_paths()["MODEL_PATH"])
    app = Flask(__name__)

    def score(features: dict) -> float:
        row = pd.DataFrame([{name: features.get(name) for name in FEATURES}])
        row[NUMERIC] = row[NUMERIC].apply(pd.to_numeric)
        return float(model.predict(row)[0])

    scored = wrap(score) if wrap else score

    @app.post("/predict")
    def predict():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
            return jsonify(error='expected {"prediction_id": ..., "features": {...}}'), 400
        prediction_id = str(body.get("prediction_id") or uuid.uuid4().hex)
        return jsonify(prediction_id=prediction_id, prediction=scored(body["features"]))

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app


def monitored(score: Callable[[dict], float]) -> Callable[[dict], float]:
    """``score`` timed and observed by a ModelMonitor of the demo model."""
    from demo.model import MODEL, VERSION
    from modelmon import ModelMonitor

    monitor = ModelMonitor(MODEL, VERSION, build_paths()["REFERENCE_PATH"])

    def score_monitored(features: dict) -> float:
        with monitor.track():
            price = score(features)
        monitor.observe(features, price)
        return price

    return score_monitored


def make_app(variant: str):
    if variant == "demo":
        with mock.patch.multiple("demo.model", **build_paths()):
            from demo.service import app
        return app
    if variant == "bare":
        return plain_app()
    if variant == "prometheus-flask-exporter":
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        app = plain_app()
        GunicornInternalPrometheusMetrics(app)
        return app
    if variant == "modelmon":
        from modelmon.flask import instrument_app

        app = plain_app(monitored)
        instrument_app(app)
        return app
    raise ValueError(f"BENCH_VARIANT must be one of {VARIANTS}, got {variant!r}")


def create():
    """gunicorn's app factory: ``benchmarks.service_app:create()``."""
    return make_app(os.environ.get("BENCH_VARIANT", "bare"))
