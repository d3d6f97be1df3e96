"""The whole native stack (demo/stack.py, the configs docker-compose.yml mounts) end to end.

Steady traffic first: no data-science alert may even go pending. Then the drift
scenario (GrLivArea 80% larger, LotFrontage sent in metres): the drift alert fires in
Prometheus, its notification reaches the alert sink with the runbook link, which opens,
the drifted events are in Elasticsearch, and the data-science dashboard's queries show
the feature.

Prometheus runs the shipped configuration on copies of the shipped rule files in which the
training shares and the 1d windows evaluate every minute (servers.rule_files_at_most):
neither reads its own group's past samples, so they record the shipped values, only sooner;
the 1h groups (their windows count their own 2-minute steps), the alert groups and their
``for`` are as shipped.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests
from grafana_queries import prometheus_targets, selections, substitute
from servers import rule_files_at_most, wait_until

from demo.stack import NativeStack, Ports

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "grafana" / "dashboards" / "model-data.json"
RATE = 20  # requests per second: over the drift alerts' 500 rows per hour within the first minute
STEADY_SECONDS = 180
DRIFTED = {"GrLivArea", "LotFrontage"}


class PrometheusAPI:
    """What grafana_queries needs of a Prometheus: the HTTP API."""

    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params) -> dict:
        response = requests.get(self.url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["data"]["result"]

    def data_science_alerts(self) -> list[dict]:
        return [a for a in self.get("/api/v1/alerts")["data"]["alerts"] if a["labels"].get("team") == "data-science"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # pytest's own directories are private to root; Elasticsearch runs as another user
    elastic_dir = Path(tempfile.mkdtemp(prefix="modelmon-e2e-es-"))
    workdir = tmp_path_factory.mktemp("stack")
    rules = workdir / "prometheus" / "rules"  # the stack links the shipped rules/ here unless it exists
    rules.mkdir(parents=True)
    rule_files_at_most(rules, sorted((REPO / "prometheus" / "rules").glob("*.yml")), "1m")
    stack = NativeStack(workdir, Ports.free(), elastic_dir=elastic_dir).start()
    yield stack
    stack.stop()
    shutil.rmtree(elastic_dir, ignore_errors=True)


def run_traffic(stack: NativeStack, scenario: str):
    traffic = stack.traffic(scenario, RATE)
    stack.launch(traffic)
    return traffic


def test_the_links_make_demo_prints_open(stack):
    """The Prometheus and Alertmanager pages of the banner answer 200 on the versions the stack runs."""
    pages = stack.pages()
    assert set(pages) == {"prometheus alerts", "prometheus query", "alertmanager alerts"}
    for name, url in pages.items():
        assert requests.get(url, timeout=30).status_code == 200, (name, url)


@pytest.mark.timeout(1800)
def test_steady_traffic_is_quiet_and_drift_alerts_end_to_end(stack):
    prometheus = PrometheusAPI(stack.url("prometheus"))
    started = time.monotonic()
    steady = run_traffic(stack, "steady")
    wait_until(lambda: prometheus.query("model:modelmon_predictions:increase_1h > 500"), 300,
               "500 steady predictions, enough for the drift alerts to judge")
    print(f"\n500 steady predictions recorded after {time.monotonic() - started:.0f}s")
    end = time.monotonic() + STEADY_SECONDS
    while True:  # every 10 s, and once more at the end of the window (not up to 10 s after it)
        assert prometheus.data_science_alerts() == [], "a data-science alert on steady traffic"
        if time.monotonic() >= end:
            break
        time.sleep(max(0.0, min(10.0, end - time.monotonic())))
    steady.stop()

    drift_started = time.time()
    run_traffic(stack, "drift")
    firing = wait_until(
        lambda: [a for a in prometheus.get("/api/v1/alerts")["data"]["alerts"]
                 if a["labels"]["alertname"] == "ModelmonFeatureDrift" and a["state"] == "firing"
                 and a["labels"].get("severity") == "critical"],
        600, "ModelmonFeatureDrift to fire")
    print(f"ModelmonFeatureDrift firing {time.time() - drift_started:.0f}s after the drift started")
    assert {a["labels"]["feature"] for a in firing} <= DRIFTED

    notification = wait_until(
        lambda: [line for line in requests.get(stack.url("alert_sink"), timeout=10).text.splitlines()
                 if "ModelmonFeatureDrift" in line and "FIRING" in line], 180, "the notification at the sink")
    runbook = f"{stack.url('runbooks')}/ModelmonFeatureDrift.md"
    assert f"runbook: {runbook}" in notification[0]
    assert requests.get(runbook, timeout=10).text.startswith("# ModelmonFeatureDrift\n")  # the link opens
    assert "[data-science]" in notification[0]

    elastic = stack.url("elasticsearch")
    query = {"query": {"bool": {"filter": [
        {"term": {"modelmon.flags.out_of_range": "LotFrontage"}},
        {"range": {"@timestamp": {"gte": int(drift_started * 1000)}}},
    ]}}}
    found = wait_until(
        lambda: requests.post(f"{elastic}/logs-modelmon.predictions-default/_search", json={**query, "size": 1},
                              timeout=30).json()["hits"]["hits"], 120, "drifted events in Elasticsearch")
    event = found[0]["_source"]
    assert float(event["modelmon.inputs"]["LotFrontage"]) < 21  # the training minimum, in feet
    before = requests.post(f"{elastic}/logs-modelmon.predictions-default/_count", timeout=30, json={"query": {
        "bool": {"filter": [{"term": {"modelmon.flags.out_of_range": "LotFrontage"}},
                            {"range": {"@timestamp": {"lt": int(drift_started * 1000)}}}]}}}).json()["count"]
    assert before == 0, "steady events flagged LotFrontage out of range"

    board = json.loads(DASHBOARD.read_text())
    drift_table = [t for _, t in prometheus_targets(board) if "psi_1h" in t["expr"]]
    assert drift_table, "the data-science dashboard has no PSI query"
    values = next(v for v in selections(prometheus, board) if "GrLivArea" in v.get("feature", "GrLivArea"))
    psi = {r["metric"]["feature"]: float(r["value"][1])
           for r in prometheus.query(substitute(drift_table[0]["expr"], values)) if "feature" in r["metric"]}
    assert psi["GrLivArea"] > 0.2 and max(psi, key=psi.get) in DRIFTED, psi
