"""A real gunicorn with 3 workers in prometheus-client multiprocess mode."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port

FIXTURES = Path(__file__).parent / "fixtures"
REQUESTS = 300


def start_gunicorn(tmp_path: Path, reference_path: Path) -> tuple[subprocess.Popen, str]:
    """gunicorn with 3 workers on a free port, in multiprocess mode, with a shared outcome store."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("from modelmon.gunicorn import child_exit, on_starting  # noqa: F401\n")
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "MODELMON_FLUSH_INTERVAL": "0.2",
        "MODELMON_REFERENCE": str(reference_path),
        "MODELMON_OUTCOMES": str(tmp_path / "outcomes.sqlite"),
        "PYTHONPATH": str(FIXTURES),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(config), "-w", "3", "-b", f"127.0.0.1:{port}",
         "feedback_flask_app:app"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/metrics", timeout=1)
            return proc, url
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("gunicorn did not start:\n" + proc.stdout.read().decode())
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture
def reference_path(tmp_path, reference) -> Path:
    path = tmp_path / "reference.yaml"
    reference.save(path)
    return path


@pytest.fixture
def gunicorn(tmp_path, reference_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_999999.db").write_bytes(b"stale")  # a previous run's, removed by on_starting
    proc, url = start_gunicorn(tmp_path, reference_path)
    yield url, tmp_path / "metrics"
    stop(proc)


def post(url: str, path: str, body, **headers) -> requests.Response:
    """A new connection per request, so the kernel spreads them over the workers."""
    response = requests.post(url + path, json=body, headers={"Connection": "close", **headers}, timeout=5)
    assert response.status_code == 200, response.text
    return response


def scrape(url: str) -> dict:
    text = requests.get(url + "/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_scraped_counters_are_the_sum_over_workers(gunicorn):
    url, metrics_dir = gunicorn
    assert not (metrics_dir / "counter_999999.db").exists()
    pids = set()
    for i in range(REQUESTS):
        response = post(url, "/predict", {"area": 80.0 + i % 50, "rooms": 3.0, "city": "lyon"})
        pids.add(int(response.headers["X-Worker-Pid"]))
    assert len(pids) >= 2, "all requests went to one worker; the test proves nothing"
    time.sleep(1.0)  # > MODELMON_FLUSH_INTERVAL: every worker has folded its counts
    samples = scrape(url)
    m = frozenset({"model": "house", "version": "1.0"}.items())

    def total(name, **labels):
        want = set(labels.items())
        return sum(v for (n, lbl), v in samples.items() if n == name and want <= lbl)

    assert samples[("modelmon_predictions_total", m)] == REQUESTS
    assert total("modelmon_feature_bin_total", feature="city", bin="lyon") == REQUESTS
    assert total("modelmon_feature_bin_total", feature="area") == REQUESTS
    assert total("modelmon_feature_value_count", feature="area") == REQUESTS
    assert total("modelmon_prediction_value_sum") == sum(3.0 * (80.0 + i % 50) for i in range(REQUESTS))
    assert total("modelmon_http_requests_total", handler="/predict", method="POST", status="200") == REQUESTS

    ratios = [lbl for (n, lbl) in samples if n == "modelmon_reference_bin_ratio" and ("feature", "city") in lbl]
    assert len(ratios) == 6 and all("pid" not in dict(lbl) for lbl in ratios)  # once, not once per worker
    info = [lbl for (n, lbl) in samples if n == "modelmon_model_info"]
    assert len(info) == 1

    memory = {dict(lbl)["pid"] for (n, lbl) in samples if n == "process_resident_memory_bytes"}
    assert len(memory) == 3, memory
    assert {str(p) for p in pids} <= memory
    assert all(samples[("process_resident_memory_bytes", frozenset({"pid": p}.items()))] > 10e6 for p in memory)


def test_labels_join_across_workers_and_restarts(tmp_path, reference_path):
    proc, url = start_gunicorn(tmp_path, reference_path)
    try:
        made_by = {}
        for i in range(120):
            response = post(url, "/predict", {"area": 100.0, "rooms": 2.0, "city": "nice"},
                            **{"X-Request-Id": f"p{i}"})
            made_by[f"p{i}"] = response.headers["X-Worker-Pid"]
        time.sleep(1.0)  # every worker has written its predictions to the shared store
        crossed = 0
        for i in range(60):  # first half of the labels, off by 10 each
            response = post(url, "/feedback", {"prediction_id": f"p{i}", "actual": 310.0})
            assert response.json() == {"joined": 1, "unmatched": 0}
            crossed += response.headers["X-Worker-Pid"] != made_by[f"p{i}"]
        unknown = post(url, "/feedback", {"prediction_id": "nobody", "actual": 1.0}).json()
        time.sleep(1.0)
        first = scrape(url)
    finally:
        stop(proc)
    assert crossed > 0, "no label reached another worker than its prediction; the test proves nothing"
    assert unknown == {"joined": 0, "unmatched": 1}

    proc, url = start_gunicorn(tmp_path, reference_path)  # a restart: new processes, same store
    try:
        answer = post(url, "/feedback", [{"prediction_id": f"p{i}", "actual": 290.0} for i in range(60, 120)]).json()
        time.sleep(1.0)
        second = scrape(url)
    finally:
        stop(proc)
    assert answer == {"joined": 60, "unmatched": 0}
    m = frozenset({"model": "house", "version": "1.0"}.items())
    assert first[("modelmon_outcomes_total", m)] == 60
    assert first[("modelmon_outcome_absolute_error_sum", m)] == pytest.approx(600.0)
    assert first[("modelmon_outcomes_unmatched_total", m | {("reason", "unknown_id")})] == 1
    assert second[("modelmon_outcomes_total", m)] == 60
    assert second[("modelmon_outcome_squared_error_sum", m)] == pytest.approx(6000.0)
