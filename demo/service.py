"""The demo model service: Flask under gunicorn, instrumented with modelmon.

POST /predict  {"prediction_id": "p-1", "features": {"LotArea": 8450, ...}}
POST /feedback {"prediction_id": "p-1", "actual": 208500} (delayed labels; with
               Authorization: Bearer <token> when MODELMON_FEEDBACK_TOKEN or
               MODELMON_FEEDBACK_TOKEN_FILE is set, as the compose and native stacks do)
GET  /metrics, GET /healthz

Demo only: the header ``X-Demo-Fault: nan`` makes the model answer NaN and
``X-Demo-Fault: slow`` adds 300 ms, so the traffic generator can show those alerts.
Settings (environment): MODELMON_EVENTS_DIR, MODELMON_OUTCOMES (a path or a redis:// URL), MODELMON_FEEDBACK_TOKEN or
MODELMON_FEEDBACK_TOKEN_FILE (modelmon.feedback).
"""
from __future__ import annotations

import os
import time
import uuid

import joblib
import pandas as pd
from flask import Flask, jsonify, request
from threadpoolctl import threadpool_limits

from modelmon import ModelMonitor
from modelmon.pipeline.events import EventLog
from modelmon.flask import add_feedback_route, instrument_app

from .model import BUILD, FEATURES, MODEL, MODEL_PATH, NUMERIC, REFERENCE_PATH, VERSION

model = joblib.load(MODEL_PATH)
threadpool_limits(1)  # after the load, which brings OpenMP in: one row per call needs no threads
monitor = ModelMonitor(
    MODEL, VERSION, REFERENCE_PATH,
    dependencies=("modelmon", "numpy", "pandas", "scikit-learn", "joblib"),
    events=EventLog(os.environ.get("MODELMON_EVENTS_DIR", BUILD / "events")),
    # a path, sqlite:///path or redis://host:6379/0 (replicas on several hosts); a bad one fails here
    outcomes=os.environ.get("MODELMON_OUTCOMES") or str(BUILD / "outcomes.sqlite"),
)
app = Flask(__name__)
instrument_app(app)
add_feedback_route(app, monitor)  # bounded to 1 MiB; the token from the environment


@app.post("/predict")
def predict():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
        return jsonify(error='expected {"prediction_id": ..., "features": {...}}'), 400
    features = body["features"]
    prediction_id = str(body.get("prediction_id") or uuid.uuid4().hex)
    fault = request.headers.get("X-Demo-Fault")
    with monitor.track(features, prediction_id=prediction_id):
        row = pd.DataFrame([{name: features.get(name) for name in FEATURES}])
        row[NUMERIC] = row[NUMERIC].apply(pd.to_numeric)  # None -> NaN; a string raises, as in real life
        price = float(model.predict(row)[0])
        if fault == "nan":
            price = float("nan")
        elif fault == "slow":
            time.sleep(0.3)
    monitor.observe(features, price, prediction_id=prediction_id)
    return jsonify(prediction_id=prediction_id, prediction=None if price != price else price)


@app.get("/healthz")
def healthz():
    return {"status": "ok", "model": MODEL, "version": VERSION}
