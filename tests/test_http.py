"""Flask and FastAPI integrations on real apps: handler = route template, /metrics served."""
from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from flask import Flask, abort
from prometheus_client.parser import text_string_to_metric_families

from modelmon.asgi import PrometheusMiddleware
from modelmon.flask import instrument_app


def parse(text: str) -> dict:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def requests_of(samples: dict, **labels) -> float:
    key = ("modelmon_http_requests_total", frozenset(labels.items()))
    return samples.get(key, 0.0)


@pytest.fixture
def flask_client(registry, monitor):
    app = Flask(__name__)

    @app.post("/predict/<name>")
    def predict(name):
        monitor.observe({"area": 100.0, "rooms": 2.0, "city": "paris"}, 300.0)
        return {"name": name}

    @app.get("/fail")
    def fail():
        raise RuntimeError("model exploded")

    @app.get("/teapot")
    def teapot():
        abort(418)

    instrument_app(app, registry=registry)
    return app.test_client()


def test_flask_counts_by_route_template(flask_client):
    for name in ("a", "b", "c"):
        assert flask_client.post(f"/predict/{name}").status_code == 200
    assert flask_client.get("/fail").status_code == 500
    assert flask_client.get("/teapot").status_code == 418
    assert flask_client.get("/no/such/path/123").status_code == 404
    assert flask_client.get("/other/unknown").status_code == 404
    response = flask_client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    samples = parse(response.get_data(as_text=True))
    assert requests_of(samples, handler="/predict/<name>", method="POST", status="200") == 3
    assert requests_of(samples, handler="/fail", method="GET", status="500") == 1
    assert requests_of(samples, handler="/teapot", method="GET", status="418") == 1
    assert requests_of(samples, handler="unmatched", method="GET", status="404") == 2
    handlers = {dict(k[1])["handler"] for k in samples if k[0] == "modelmon_http_requests_total"}
    assert not any("/a" in h or "123" in h for h in handlers)
    count = ("modelmon_http_request_duration_seconds_count",
             frozenset({"handler": "/predict/<name>", "method": "POST"}.items()))
    assert samples[count] == 3
    assert samples[("modelmon_predictions_total", frozenset({"model": "house", "version": "1.0"}.items()))] == 3
    assert samples[("modelmon_http_requests_in_progress", frozenset())] == 1  # the scrape itself


def test_flask_odd_methods_are_grouped(flask_client):
    flask_client.open("/predict/a", method="PROPFIND")
    samples = parse(flask_client.get("/metrics").get_data(as_text=True))
    assert requests_of(samples, handler="unmatched", method="other", status="405") == 1


@pytest.fixture
def fastapi_client(registry, monitor):
    app = FastAPI()

    @app.post("/predict/{name}")
    def predict(name: str):
        monitor.observe({"area": 100.0, "rooms": 2.0, "city": "paris"}, 300.0)
        return {"name": name}

    @app.get("/missing/{item}")
    def missing(item: int):
        raise HTTPException(status_code=404, detail="no such item")

    @app.get("/fail")
    def fail():
        raise RuntimeError("model exploded")

    app.add_middleware(PrometheusMiddleware, registry=registry)
    return TestClient(app, raise_server_exceptions=False)


def test_fastapi_counts_by_route_template(fastapi_client):
    for name in ("a", "b"):
        assert fastapi_client.post(f"/predict/{name}").status_code == 200
    assert fastapi_client.get("/missing/7").status_code == 404
    assert fastapi_client.get("/missing/not-a-number").status_code == 422
    assert fastapi_client.get("/fail").status_code == 500
    assert fastapi_client.get("/nowhere/9").status_code == 404
    response = fastapi_client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    samples = parse(fastapi_client.get("/metrics").text)
    assert requests_of(samples, handler="/predict/{name}", method="POST", status="200") == 2
    assert requests_of(samples, handler="/missing/{item}", method="GET", status="404") == 1
    assert requests_of(samples, handler="/missing/{item}", method="GET", status="422") == 1
    assert requests_of(samples, handler="/fail", method="GET", status="500") == 1
    assert requests_of(samples, handler="unmatched", method="GET", status="404") == 1
    assert requests_of(samples, handler="/metrics", method="GET", status="200") == 1
