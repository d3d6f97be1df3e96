"""``modelmon report --prometheus`` against a real Prometheus scraping a real exporter, with
the project's recording rules (issue 17).

An exporter in this process (a ModelMonitor on its own registry) serves a model whose
live rows drift: area shifted by half a standard deviation, more Nice, a few missing
areas. Prometheus scrapes it every second and evaluates features.rules.yml and
predictions.rules.yml every second (test copies with every group at that interval: the
shipped 1m groups tile minutes and the reference and 1d groups run every few minutes, which
would make the test wait for minutes; PSI and the missing share are ratios of increases,
which the tiling scales alike). Once an evaluation has seen every row, the report
over the same hour, ending at that evaluation's time, must give each column's PSI
within 1% of the recorded ``model_feature:modelmon_feature_bin:psi_1h`` (and
``model_output:modelmon_prediction_bin:psi_1h``), and the missing share of the
recorded ``missing_share_1h``; the raw-value tests are marked as not run.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import training_frame
from prometheus_client import CollectorRegistry

from modelmon import ModelMonitor, Reference, start_http_server
from modelmon.cli import main
from servers import LINES, free_port, rule_files_every, start_prometheus

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = [REPO / "prometheus" / "rules" / name for name in ("features.rules.yml", "predictions.rules.yml")]
ROWS = 3000
SECONDS = {"s": 1, "m": 60, "h": 3600}


def rule_interval(rule_files: list[Path]) -> float:
    """The longest evaluation interval a rule group of these files sets (1 s, the global
    one here, if none does). Rules that tile minutes (``interval: 1m``) need the counters'
    zeros scraped a whole interval before the rows, and an evaluation takes that long to come."""
    longest = 1.0
    for path in rule_files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            text = str(group.get("interval", "1s"))
            longest = max(longest, float(text[:-1]) * SECONDS[text[-1]])
    return longest


def recorded(prom, record: str, label: str, name: str, after: float) -> tuple[float, float] | None:
    """(value, evaluation time) of a recording rule's series, once evaluated after ``after``."""
    result = prom.query(f'timestamp({record}{{model="house", {label}="{name}"}})')
    if not result or float(result[0]["value"][1]) < after:
        return None
    at = float(result[0]["value"][1])
    value = prom.query(f'{record}{{model="house", {label}="{name}"}}', at=at)
    return (float(value[0]["value"][1]), at) if value else None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("line", LINES)
def test_psi_from_prometheus_equals_the_recording_rules(tmp_path, capsys, line):
    training = training_frame(4000, seed=1)
    reference = Reference.from_data(training, model="house", version="1.0", prediction="price")
    reference.save(tmp_path / "reference.yaml")
    registry = CollectorRegistry()
    monitor = ModelMonitor("house", "1.0", reference, registry=registry)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": [{"job_name": "modelmon", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }
    (tmp_path / "rules").mkdir()
    rule_files = rule_files_every(tmp_path / "rules", RULE_FILES)
    try:
        with start_prometheus(config, rule_files, line=line) as prom:
            # every bin's counter is scraped at 0 before any row: increase() counts them all
            prom.wait_for('modelmon_feature_bin_total{feature="area", bin="__missing__"} == 0', timeout=30)
            interval = rule_interval(rule_files)
            if interval > 1:
                time.sleep(interval + 5)
            rng = np.random.default_rng(5)
            live = training_frame(ROWS, seed=2)
            area = live["area"] + 10.0
            area[rng.random(ROWS) < 0.03] = math.nan
            city = rng.choice(["paris", "lyon", "nice"], ROWS, p=[0.3, 0.3, 0.4]).astype(object)
            for start in range(0, ROWS, 500):
                part = slice(start, start + 500)
                monitor.observe_batch({"area": area[part], "rooms": live["rooms"][part], "city": city[part]},
                                      live["price"][part])
            sent = time.time()
            prom.wait_for(f'sum(modelmon_feature_bin_total{{feature="area"}}) == {ROWS} and on() '
                          f'timestamp(modelmon_feature_bin_total{{feature="area", bin="__missing__"}}) > {sent}',
                          timeout=30)
            scraped = time.time()
            # an evaluation 2 s after the scrape, whose hour holds every row
            psi = {}
            for name, record, label in (("area", "model_feature:modelmon_feature_bin:psi_1h", "feature"),
                                        ("rooms", "model_feature:modelmon_feature_bin:psi_1h", "feature"),
                                        ("city", "model_feature:modelmon_feature_bin:psi_1h", "feature"),
                                        ("price", "model_output:modelmon_prediction_bin:psi_1h", "output")):
                psi[name] = prom.wait_for(lambda p: recorded(p, record, label, name, scraped + 2),
                                          timeout=2 * interval + 30)
            at = psi["area"][1]
            missing = recorded(prom, "model_feature:modelmon_feature_bin:missing_share_1h", "feature", "area", at - 1)
            code = main(["report", "--reference", str(tmp_path / "reference.yaml"), "--prometheus", prom.url,
                         "--since", "1h", "--until", str(at), "-o", str(tmp_path / "report")])
            out = capsys.readouterr().out
            assert code == 0, out
            rep = json.loads((tmp_path / "report.json").read_text())
            started = time.monotonic()
            assert main(["report", "--reference", str(tmp_path / "reference.yaml"), "--prometheus", prom.url,
                         "--since", "1h", "--until", str(psi["price"][1]), "-o", str(tmp_path / "price")]) == 0
            seconds = time.monotonic() - started
            price_rep = json.loads((tmp_path / "price.json").read_text())
    finally:
        server.shutdown()

    columns = {c["name"]: c for c in rep["columns"]}
    columns["price"] = next(c for c in price_rep["columns"] if c["name"] == "price")
    for name, (value, _) in psi.items():
        ours = next(t for t in columns[name]["tests"] if t["test"] == "psi")["statistic"]
        print(f"Prometheus {line}: {name}: PSI recorded {value:.6f}, report {ours:.6f}")
        assert ours == pytest.approx(value, rel=0.01), name
    assert columns["area"]["special_shares"]["missing"]["live"] == pytest.approx(missing[0], rel=0.01)
    # increase() extrapolates towards the window's edges, as in the rules: on series a few
    # seconds old at the end of an hour, 3,505 (Prometheus 2.42) and 3,872 (3.x) for 3,000
    # rows; the shares, and so PSI, are the rules' own all the same
    assert ROWS * 0.99 <= columns["area"]["n"] <= ROWS * 1.35
    assert rep["events"]["kind"] == "prometheus" and rep["events"]["window_seconds"] == 3600
    assert list(rep["events"]["versions"]) == ["1.0"]
    # values past the training maximum (the shifted area has a few) are tested on their own
    outside = [b["count"] for b in columns["area"]["bins"] if b["label"] in ("__below__", "__above__")]
    assert [t["test"] for t in columns["area"]["tests"]] == [
        "ks_binned", "chi_square", *(["new_bins"] if sum(outside) else []), "psi", "jensen_shannon"]
    assert any("raw-value tests not run" in note for note in columns["area"]["notes"])
    assert any("need --events" in note for note in rep["notes"])
    assert "area" in rep["drifting"] and "city" in rep["drifting"] and "rooms" not in rep["drifting"]
    assert seconds < 10
