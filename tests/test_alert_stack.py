"""The alert stack end to end: a drifting model service, Prometheus, Alertmanager.

Real Prometheus and Alertmanager (the current line) run on loopback with the shipped
configurations, only their addresses substituted, and the shipped rule files (copies in
which the training shares and the 1d windows evaluate every minute: their values do not
depend on their interval, and at 4 minutes the alert took up to 6 minutes to fire; the 1h
groups, whose windows count their own 2-minute steps, the alert group and its ``for`` are as
shipped).
Prometheus scrapes tests/fixtures/drift_service.py, whose sqft input has moved three
training standard deviations; ModelmonFeatureDrift must go pending, then firing, and
reach the data-science webhook with its runbook and dashboard links; the runbook link
opens on the runbook server demo/runbooks.py (as make demo and compose serve it).
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from demo.stack import alertmanager_pages, prometheus_pages
from servers import (CURRENT, DEBIAN, INSTALL_HINT, LINES, binary, free_port, rule_files_at_most,
                     start_alertmanager, start_prometheus, start_webhook_receiver, wait_until)

REPO = Path(__file__).resolve().parents[1]
SERVICE = REPO / "tests" / "fixtures" / "drift_service.py"
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
TEMPLATES = sorted((REPO / "alertmanager" / "templates").glob("*.tmpl"))


def substituted(path: Path, addresses: dict[str, str]) -> str:
    """The file's text with addresses replaced; each must be there to replace."""
    text = path.read_text()
    for old, new in addresses.items():
        assert old in text, f"{old} is not in {path}"
        text = text.replace(old, new)
    return text


def metrics_served(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return b"modelmon_feature_bin_total" in response.read()
    except OSError:
        return False


@pytest.fixture
def runbook_server():
    """docs/runbooks over HTTP on loopback, as demo/stack.py serves them; yields host:port."""
    from demo.runbooks import RUNBOOKS, server

    httpd = server(RUNBOOKS, "127.0.0.1", free_port())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1:%d" % httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def drift_service(tmp_path):
    port = free_port()
    log = tmp_path / "drift_service.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, str(SERVICE), str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: metrics_served(port) or process.poll() is not None, 60, "the drift service")
        assert process.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def drift_alert(alerts: list[dict]) -> dict | None:
    return next((a for a in alerts if a["labels"]["alertname"] == "ModelmonFeatureDrift"
                 and a["labels"]["severity"] == "critical" and a["labels"].get("feature") == "sqft"), None)


@pytest.mark.timeout(480)
def test_feature_drift_goes_pending_then_firing_and_reaches_the_webhook(drift_service, runbook_server, tmp_path):
    with start_webhook_receiver() as sink:
        am_config = substituted(REPO / "alertmanager" / "alertmanager.yml", {"alert-sink:9099": sink.address})
        with start_alertmanager(am_config, TEMPLATES) as am:
            prom_config = substituted(REPO / "prometheus" / "prometheus.yml",
                                      {"demo:8000": drift_service, "alertmanager:9093": am.address,
                                       "localhost:9098": runbook_server})
            (tmp_path / "rules").mkdir()
            rule_files = rule_files_at_most(tmp_path / "rules", RULE_FILES, "1m")
            with start_prometheus(prom_config, rule_files) as prom:
                states = []

                def firing(prom):
                    found = drift_alert(prom.alerts())
                    if found and (not states or states[-1] != found["state"]):
                        states.append(found["state"])
                    return found if found and found["state"] == "firing" else None

                started = time.monotonic()
                alert = prom.wait_for(firing, timeout=360)
                assert states == ["pending", "firing"]
                print(f"ModelmonFeatureDrift firing after {time.monotonic() - started:.0f}s")

                psi = {s["metric"]["feature"]: float(s["value"][1])
                       for s in prom.query('model_feature:modelmon_feature_bin:psi_1h{model="drift-demo"}')}
                assert psi["sqft"] >= 0.2 and psi["zone"] < 0.1  # only the shifted input drifted
                assert alert["labels"]["version"] == "1.0.0"

                delivery = sink.wait_for(lambda d: d.path == "/data-science" and drift_alert(d.body["alerts"]), 120)
                assert delivery.body["receiver"] == "data-science"
                sent = drift_alert(delivery.body["alerts"])
                runbook = sent["annotations"]["runbook_url"]
                assert runbook == f"http://{runbook_server}/ModelmonFeatureDrift.md"
                with urllib.request.urlopen(runbook, timeout=10) as page:  # the link opens, as text
                    assert page.status == 200
                    assert page.headers["Content-Type"] == "text/plain; charset=utf-8"
                    assert page.read().decode() == (REPO / "docs" / "runbooks" / "ModelmonFeatureDrift.md").read_text()
                assert sent["annotations"]["dashboard_url"] == (
                    "http://localhost:3000/d/modelmon-data/model-data?var-model=drift-demo&var-version=1.0.0")
                assert "feature sqft of drift-demo 1.0.0" in sent["annotations"]["description"]


def test_a_missing_binary_fails_the_test_saying_how_to_install_it():
    with pytest.raises(pytest.fail.Exception) as failure:
        binary("prometheus-that-is-not-installed", DEBIAN)
    assert INSTALL_HINT in str(failure.value)
    assert INSTALL_HINT.startswith("apt-get install prometheus prometheus-alertmanager")
    with pytest.raises(pytest.fail.Exception) as failure:
        binary("prometheus-that-is-not-installed")
    assert "scripts/install-prometheus3.sh" in str(failure.value)


@pytest.mark.parametrize("line", LINES)
def test_both_lines_are_installed_and_answer_their_version(line):
    """Debian's packages (Prometheus 2.42, Alertmanager 0.25) and the current releases
    (Prometheus 3.x, Alertmanager 0.3x): `make deps` installs both."""
    major = {DEBIAN: "2.", CURRENT: "3."}[line]
    minor = {DEBIAN: "0.2", CURRENT: "0.3"}[line]
    for name, prefix in (("prometheus", major), ("promtool", major), ("alertmanager", minor), ("amtool", minor)):
        done = subprocess.run([binary(name, line), "--version"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        version = re.search(r"version (\S+)", done.stdout + done.stderr).group(1)
        assert version.startswith(prefix), f"{name} of the {line} line is {version}"


@pytest.mark.parametrize("line", LINES)
def test_the_demos_links_open_on_the_prometheus_and_alertmanager_it_runs(line):
    """make demo prints these: Debian's 2.42 serves its UI under /classic/ (/alerts is a 404
    there); the 3.x built without UI assets answers 500 on its UI pages, so the API instead."""
    with start_alertmanager(REPO / "alertmanager" / "alertmanager.yml", TEMPLATES, line=line) as am, \
            start_prometheus("global: {scrape_interval: 15s}\n", line=line) as prom:
        pages = {**prometheus_pages(prom.url), **alertmanager_pages(am.url)}
        assert set(pages) == {"prometheus alerts", "prometheus query", "alertmanager alerts"}
        for name, url in pages.items():
            response = requests.get(url, timeout=10)
            assert response.status_code == 200, (name, url, response.status_code)
        version = prom.get("/api/v1/status/buildinfo")["data"]["version"]
        ui = "/classic/alerts" if version.startswith("2.") else "/alerts"
        if requests.get(prom.url + ui, timeout=10).status_code == 200:
            assert pages["prometheus alerts"] == prom.url + ui
        else:
            assert pages["prometheus alerts"] == prom.url + "/api/v1/alerts"
        assert "modelmon_feature_bin" in pages["prometheus query"]
