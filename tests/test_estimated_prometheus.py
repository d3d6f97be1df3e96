"""Estimated quality through a real Prometheus with the project's rules (issue 15).

A scikit-learn HistGradientBoostingClassifier on make_classification data (no download):
trained on 10,000 rows, calibrated on a 4,000-row hold-out set, served through a real
exporter scraped every second by a real Prometheus running every rule file of
prometheus/rules (groups every second, alerts without their ``for``, so a test need not
wait a day). Two versions of the model are served 5,000 rows each, with delayed labels
joined for every row:

- ``shift``: covariate shift toward the decision boundary. The rows are drawn from the same
  generator, but selected with weight exp(-|p - 0.5| / 0.15) on the model's probability p:
  the population moves to where the model is unsure, P(y | x) is unchanged. Accuracy falls
  from 0.92 on the hold-out set by more than 10 points; the recorded estimate
  (model:modelmon_estimated:accuracy_1h, no labels used) must be within 2 points of the
  realized accuracy (model:modelmon_outcomes:accuracy_1h), and ModelmonEstimatedQualityDrop
  fires.
- ``concept``: concept drift. The rows come from the hold-out distribution, but the label of
  every row with x0 above its 70th percentile is flipped: the same inputs now mean the other
  class. The model is as confident as ever, so the estimate stays at the hold-out accuracy
  (CBPE's known limit: it can only see what moves the model's confidence) while the
  realized accuracy falls; ModelmonEstimatedQualityDrop stays silent and ModelmonQualityDrop,
  on the joined labels, fires.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client import CollectorRegistry
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier

from modelmon import ModelMonitor, Reference, start_http_server
from servers import LINES, free_port, start_prometheus

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "prometheus" / "rules"
ROWS = 5_000
FEATURES = [f"x{i}" for i in range(8)]
NAMES = np.array(["no", "yes"])
TOLERANCE = 0.02  # accuracy points


def scenario():
    X, y = make_classification(60_000, n_features=8, n_informative=5, n_redundant=1, flip_y=0.02,
                               class_sep=1.0, random_state=15)
    train, holdout, pool = slice(0, 10_000), slice(10_000, 14_000), slice(14_000, None)
    model = HistGradientBoostingClassifier(random_state=0).fit(X[train], y[train])
    frame = pd.DataFrame(X[train], columns=FEATURES).assign(pred=NAMES[model.predict(X[train])])
    P = model.predict_proba(X[holdout])
    held = pd.DataFrame(X[holdout], columns=FEATURES).assign(y=NAMES[y[holdout]], p_no=P[:, 0], p_yes=P[:, 1])
    ref = Reference.from_data(frame, model="credit", version="1", prediction="pred", holdout=held, target="y",
                              probabilities=["p_no", "p_yes"])
    rng = np.random.default_rng(3)
    Xp, yp = X[pool], y[pool]
    Pp = model.predict_proba(Xp)
    weights = np.exp(-np.abs(Pp[:, 1] - 0.5) / 0.15)
    shifted = rng.choice(len(Xp), ROWS, replace=False, p=weights / weights.sum())
    same = rng.choice(len(Xp), ROWS, replace=False)
    flipped = np.where(Xp[same, 0] > np.quantile(X[train, 0], 0.7), 1 - yp[same], yp[same])
    return ref, {"shift": (Xp[shifted], Pp[shifted], yp[shifted]), "concept": (Xp[same], Pp[same], flipped)}


@pytest.fixture(scope="module")
def trained():
    """The scenario, trained once for both lines (about 9 s of fitting on a loaded 2-core machine)."""
    return scenario()


def rule_files_without_waiting(tmp: Path) -> list[Path]:
    """Every rule file, with each group evaluated every second and each alert without its ``for``."""
    out = []
    for path in sorted(RULES.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule.pop("for", None)
        (tmp / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(tmp / path.name)
    return out


def value(prom, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.timeout(240)
@pytest.mark.parametrize("line", LINES)
def test_estimated_accuracy_follows_a_covariate_shift_and_misses_a_concept_drift(tmp_path, line, trained):
    started = time.monotonic()
    ref, streams = trained
    registry = CollectorRegistry()
    monitors = {version: ModelMonitor("credit", version, ref, registry=registry) for version in streams}
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "external_labels": {"grafana_url": "http://g", "runbook_base_url": "http://r"}},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": [{"job_name": "modelmon", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }
    try:
        with start_prometheus(config, rule_files_without_waiting(tmp_path), line=line) as prom:
            # every counter at 0 first, so that increase() sees the whole 5,000
            prom.wait_for('count(modelmon_estimated_total == 0) == 2 and count(modelmon_outcomes_total == 0) == 2',
                          timeout=30)
            sent_at = time.time()
            realized, raw = {}, {}
            for version, (X, P, y) in streams.items():
                monitor, predicted = monitors[version], NAMES[(P[:, 1] > 0.5).astype(int)]
                for i in range(ROWS):
                    monitor.observe(dict(zip(FEATURES, X[i].tolist())), predicted[i], prediction_id=f"{version}-{i}",
                                    probabilities={"no": P[i, 0], "yes": P[i, 1]})
                for i in range(ROWS):
                    monitor.record_outcome(f"{version}-{i}", NAMES[y[i]])
                realized[version] = float(np.mean(predicted == NAMES[y]))
                raw[version] = float(np.mean(np.where(predicted == "yes", P[:, 1], P[:, 0])))

            def scraped(p):  # the time of a scrape with every row and label in
                counts = [value(p, f'sum({name}{{model="credit"}})') for name in
                          ("modelmon_estimated_total", "modelmon_outcomes_total")]
                at = value(p, 'min(timestamp(modelmon_outcomes_total{model="credit"}))')
                return at if counts == [2 * ROWS, 2 * ROWS] and at is not None and at > sent_at else None
            scraped_at = prom.wait_for(scraped, timeout=30, interval=0.5)

            def recorded(p):  # once a rule evaluation has seen that scrape
                found = {}
                for version in streams:
                    labels = f'{{model="credit", version="{version}"}}'
                    at = value(p, f"timestamp(model:modelmon_estimated:accuracy_gap_1h{labels})")
                    if at is None or at < scraped_at + 1.5:
                        return None
                    found[version] = {f"{metric[9:]}:{name}": value(p, f"model:{metric}:{name}_1h{labels}") for metric, name in (
                        ("modelmon_estimated", "accuracy"), ("modelmon_estimated", "accuracy_stderr"),
                        ("modelmon_outcomes", "accuracy"), ("modelmon_estimated", "accuracy_gap"),
                        ("modelmon_estimated", "accuracy_drop"), ("modelmon_estimated", "precision"),
                        ("modelmon_estimated", "recall"), ("modelmon_estimated", "f1"))}
                return found
            series = prom.wait_for(recorded, timeout=60, interval=0.5)

            def alerts(p):
                firing = {(a["labels"]["alertname"], a["labels"].get("version")) for a in p.alerts()
                          if a["state"] == "firing" and a["labels"].get("model") == "credit"}
                wanted = {("ModelmonEstimatedQualityDrop", "shift"), ("ModelmonQualityDrop", "concept")}
                return firing if wanted <= firing else None
            firing = prom.wait_for(alerts, timeout=60, interval=0.5)
    finally:
        server.shutdown()
    holdout = ref.evaluation["accuracy"]
    print(f"\nPrometheus {line}: hold-out accuracy {holdout:.4f}; realized {realized}; uncalibrated confidence {raw}; "
          f"recorded {series}; alerts {sorted(firing)}; {time.monotonic() - started:.0f}s")
    shift, concept = series["shift"], series["concept"]
    assert realized["shift"] <= holdout - 0.10  # the shift costs at least 10 points
    for version in streams:  # the recorded realized accuracy is exact (same scrape, extrapolation cancels)
        assert series[version]["outcomes:accuracy"] == pytest.approx(realized[version], abs=1e-9)
    assert abs(shift["estimated:accuracy_gap"]) <= TOLERANCE  # the estimate, no labels used, within 2 points
    assert shift["estimated:accuracy_gap"] == pytest.approx(shift["estimated:accuracy"] - realized["shift"], abs=1e-9)
    assert shift["estimated:accuracy_stderr"] < TOLERANCE / 2
    assert shift["estimated:accuracy_drop"] > 0.1
    assert all(0 < shift[f"estimated:{m}"] < 1 for m in ("precision", "recall", "f1"))
    # concept drift: the labels fall, the estimate does not see it
    assert realized["concept"] <= holdout - 0.10
    assert abs(concept["estimated:accuracy"] - holdout) <= TOLERANCE
    assert concept["estimated:accuracy_gap"] > 0.10
    assert ("ModelmonEstimatedQualityDrop", "concept") not in firing
