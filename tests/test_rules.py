"""Prometheus configuration and rules: promtool checks and unit tests, and the contract.

The rules may only read metrics the package exports (exported_samples()), their
default thresholds are the package's ALERT_THRESHOLDS, every alert carries the
labels and annotations of DESIGN.md section 3 and has a runbook, and the drift
statistics equal numpy's on the bins of prometheus/tests/recording.test.yml.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelmon import exported_samples
from modelmon.serving.metrics import ALERT_THRESHOLDS, CONTRACT, MEAN_SHIFT_MIN_EFFECT, NEGATIVE, POSITIVE, SIGN, SIGNS
from servers import CURRENT, LINES, binary

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
RUNBOOKS = REPO / "docs" / "runbooks"

# DESIGN.md section 3, and the log pipeline's own (pipeline.alerts.yml).
ALERTS = {
    "ModelmonTargetDown", "ModelmonHighErrorRate", "ModelmonHighLatency", "ModelmonLatencyRegression",
    "ModelmonMemoryGrowth", "ModelmonNoPredictions", "ModelmonFeatureDrift", "ModelmonPredictionDrift",
    "ModelmonFeatureMissing", "ModelmonUnseenCategories", "ModelmonOutOfRange", "ModelmonPredictionMeanShift",
    "ModelmonNonFinitePredictions", "ModelmonModelStale", "ModelmonModelVersionChanged",
    "ModelmonDependencyChanged", "ModelmonQualityDrop", "ModelmonMonitoringErrors",
    "ModelmonEstimatedQualityDrop",  # issue 15: estimated.alerts.yml
    "ModelmonFeatureMeanShift",  # issue 14: input means, data.alerts.yml
    "ModelmonShipperDown", "ModelmonShipperBacklog", "ModelmonShipperRejectedDocuments", "ModelmonShipperDataLoss",
}
# Alerts whose value is a constant (the target is down, a version appeared): their
# description says what happened instead of a number.
VALUELESS = {"ModelmonTargetDown", "ModelmonModelVersionChanged", "ModelmonDependencyChanged", "ModelmonShipperDown"}
PROCESS_SAMPLES = {"up", "process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds"}
DASHBOARDS = {"ops": "/d/modelmon-ops/model-service", "data-science": "/d/modelmon-data/model-data"}
LEVELS = {"model", "model_feature", "model_feature_bin", "model_output", "model_output_bin", "model_alert", "job_stage"}


def promtool(*args: str, line: str = CURRENT) -> subprocess.CompletedProcess:
    """promtool of one line: the checks and unit tests run on Debian's Prometheus 2.42 and on 3.x."""
    return subprocess.run([binary("promtool", line), *args], capture_output=True, text=True, cwd=PROMETHEUS,
                          timeout=120)


def all_rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict]:
    return [rule for rule in all_rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


# Alerts whose series have a model label only where the target was ever scraped.
MODEL_WHEN_KNOWN = {"ModelmonTargetDown"}


def carries_model(rule: dict) -> bool:
    """Whether the alert's series have a model label: its expression reads a package metric
    labelled with the model, or a recording rule of a model level."""
    with_model = {sample for spec in CONTRACT if "model" in spec.labels for sample in spec.samples}
    return any(name in with_model or ":" in name and name.split(":")[0].startswith("model")
               for name in metric_names(rule["expr"]))


# --- promtool -----------------------------------------------------------------------

@pytest.mark.parametrize("line", LINES)
def test_prometheus_config_and_its_rule_files_are_valid(line):
    result = promtool("check", "config", "prometheus.yml", line=line)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


@pytest.mark.parametrize("line", LINES)
def test_remote_write_example_is_valid_once_uncommented(tmp_path, line):
    text = (PROMETHEUS / "prometheus.yml").read_text()
    enabled = re.sub(r"^# (remote_write:|  .*)$", r"\1", text, flags=re.MULTILINE)
    assert yaml.safe_load(enabled)["remote_write"][0]["url"].startswith("http://")
    (tmp_path / "prometheus.yml").write_text(enabled)
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    result = subprocess.run([binary("promtool", line), "check", "config", "prometheus.yml"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("line", LINES)
def test_rule_files_are_valid(line):
    result = promtool("check", "rules", *(str(p) for p in RULE_FILES), line=line)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file, line):
    result = promtool("test", "rules", str(test_file), line=line)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case_on_the_same_series():
    firing, silent = defaultdict(list), defaultdict(list)
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            shape = {re.match(r"[\w:]+", s["series"]).group() for s in group["input_series"]}
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent)[case["alertname"]].append(shape)
    for alert in sorted(ALERTS):
        assert firing[alert], f"no promtool case where {alert} fires"
        assert any(shape in firing[alert] for shape in silent[alert]), \
            f"no promtool case where {alert} stays silent on the series of a firing case"


# --- the contract -------------------------------------------------------------------

def test_alert_names_are_those_of_the_design():
    assert {rule["alert"] for rule in alert_rules()} == ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_labels_and_annotations(rule):
    name, labels, annotations = rule["alert"], rule["labels"], rule["annotations"]
    assert set(labels) == {"severity", "team"}
    assert labels["severity"] in {"critical", "warning", "info"}
    assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}
    # The base is an external label, like Grafana's: the folder of docs/runbooks/ wherever
    # it is served (the compose runbooks service, make demo's, or your wiki).
    assert annotations["runbook_url"] == "{{ $externalLabels.runbook_base_url }}/" + f"{name}.md"
    assert (RUNBOOKS / f"{name}.md").is_file()
    dashboard = "{{ $externalLabels.grafana_url }}" + DASHBOARDS[labels["team"]]
    by_model = dashboard + "?var-model={{ $labels.model | urlquery }}&var-version={{ $labels.version | urlquery }}"
    by_job = dashboard + "?var-job={{ $labels.job | urlquery }}"  # an empty var-model would show nothing
    by_model_when_known = (dashboard + "?{{ with $labels.model }}var-model={{ . | urlquery }}&var-version="
                           "{{ $labels.version | urlquery }}{{ else }}var-job={{ $labels.job | urlquery }}{{ end }}")
    expected = by_model_when_known if name in MODEL_WHEN_KNOWN else by_model if carries_model(rule) else by_job
    assert annotations["dashboard_url"] == expected
    text = annotations["summary"] + annotations["description"]
    if "model_feature:" in rule["expr"]:
        assert "$labels.feature" in text
    if "model_output:" in rule["expr"]:
        assert "$labels.output" in text
    if name not in VALUELESS:
        assert "$value" in annotations["description"]


def test_the_mean_shift_alert_needs_the_package_effect_size():
    (rule,) = [r for r in alert_rules() if r["alert"] == "ModelmonPredictionMeanShift"]
    assert f"abs(model_output:modelmon_prediction_value:effect_size_1h) >= {MEAN_SHIFT_MIN_EFFECT}\n" in rule["expr"]
    assert f"at least {MEAN_SHIFT_MIN_EFFECT} training standard deviations" in rule["annotations"]["description"]


def test_alerts_without_a_model_label_are_told_apart():
    assert {rule["alert"] for rule in alert_rules() if not carries_model(rule)} == {
        "ModelmonMonitoringErrors", "ModelmonDependencyChanged", "ModelmonShipperDown", "ModelmonShipperBacklog",
        "ModelmonShipperRejectedDocuments", "ModelmonShipperDataLoss"}


def test_prometheus_config_sets_the_link_bases():
    labels = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["global"]["external_labels"]
    assert {"grafana_url", "runbook_base_url"} <= set(labels)
    assert not labels["runbook_base_url"].endswith("/")  # the annotations add "/<Alert>.md"


def test_promtool_cases_render_the_runbook_links_from_the_external_label():
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            base = group.get("external_labels", {}).get("runbook_base_url")
            for case in group.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    url = alert.get("exp_annotations", {}).get("runbook_url")
                    if url is not None:
                        assert base and url == f"{base}/{case['alertname']}.md", (path.name, case["alertname"])


def test_runbooks_are_exactly_one_per_alert():
    assert {p.stem for p in RUNBOOKS.glob("*.md")} == ALERTS
    for path in RUNBOOKS.glob("*.md"):
        text = path.read_text()
        assert text.startswith(f"# {path.stem}\n"), path
        for heading in ("## What it means", "## How to confirm", "## Likely causes", "## What to do"):
            assert heading in text, f"{path.name} lacks {heading!r}"


def test_default_thresholds_are_the_packages():
    groups = yaml.safe_load((PROMETHEUS / "rules" / "thresholds.rules.yml").read_text())["groups"]
    defaults = {}
    for rule in (r for g in groups for r in g["rules"]):
        alert = rule["labels"]["alert"]
        assert f'modelmon_alert_threshold{{alert="{alert}"}}' in rule["expr"], alert
        defaults[alert] = float(re.search(r"\* 0 \+ ([0-9.e+-]+)\s*$", rule["expr"]).group(1))
    assert defaults == ALERT_THRESHOLDS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alerts_compare_with_their_own_threshold(rule):
    used = set(re.findall(r'model_alert:modelmon_alert_threshold:effective\{alert="(\w+)"\}', rule["expr"]))
    assert used == ({rule["alert"]} if rule["alert"] in ALERT_THRESHOLDS else set())


# Words of PromQL that look like metric names: operators, modifiers and aggregations.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (rough lexing, good for our rules)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"#.*", "", expr)  # comments
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", expr):
        followed_by_call = expr[match.end():].lstrip().startswith("(")
        if match.group() not in KEYWORDS and not followed_by_call:
            names.add(match.group())
    return names


def test_metric_names_are_found_in_expressions():
    expr = """sum without(instance) (rate(foo_total{bin=~"a|b"}[5m])) / on(job) group_left()
              bar:baz:qux > 1e-4 and time() - max by(y) (zed offset 1h) # not_me
              or label_replace(up, "to", "$1", "from", "(.*)") * 0.5"""
    assert metric_names(expr) == {"foo_total", "bar:baz:qux", "zed", "up"}


def test_rules_read_only_metrics_the_package_exports():
    allowed = exported_samples() | PROCESS_SAMPLES | recorded_names()
    used = {name for rule in all_rules() for name in metric_names(rule["expr"])}
    assert used - allowed == set()
    assert {"modelmon_feature_bin_total", "modelmon_reference_bin_ratio", "up"} <= used  # the check sees names


def test_recording_rules_sum_over_replicas_and_workers():
    for rule in all_rules():
        if "record" in rule and metric_names(rule["expr"]) & exported_samples():
            assert "without(instance, pod, pid" in rule["expr"], rule["record"]


def test_recording_rule_names_follow_the_scheme():
    bases = {spec.name for spec in CONTRACT} | exported_samples()
    for name in recorded_names():
        level, metric, operations = name.split(":")
        assert level in LEVELS, name
        assert metric in bases, name
        assert re.fullmatch(r"[a-z0-9_]+", operations), name


def test_recording_rules_are_listed_in_the_docs():
    documented = set(re.findall(r"`([a-z_]+:modelmon_[a-z0-9_]+:[a-z0-9_]+)`", (REPO / "docs" / "alerting.md").read_text()))
    assert documented == recorded_names()


# --- drift statistics against numpy -------------------------------------------------

FLOOR = 1e-4
MINUTES = {"1h": 60, "1d": 1440}


def series_rates(path: Path) -> dict[tuple[str, str, str, str], float]:
    """(metric, column label, column, bin or sign or "") -> per-minute increase or constant value, summed
    or maxed over replicas as the rules do."""
    found: dict[tuple, float] = {}
    for group in yaml.safe_load(path.read_text())["tests"]:
        for s in group["input_series"]:
            metric = re.match(r"[\w:]+", s["series"]).group()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', s["series"]))
            column = "feature" if "feature" in labels else "output"
            key = (metric, column, labels[column], labels.get("bin", labels.get(SIGN, "")))
            rate = re.fullmatch(r"0\+([0-9.]+)x\d+", s["values"])
            if rate:  # a counter: replicas add up
                found[key] = found.get(key, 0.0) + float(rate.group(1))
            else:  # a reference gauge: every replica exports the same
                found[key] = max(found.get(key, 0.0), float(re.fullmatch(r"([0-9.]+)x\d+", s["values"]).group(1)))
    return found


def numpy_statistics(rates: dict, column: str, name: str, window: str) -> dict[str, float]:
    kind = "feature" if column == "feature" else "prediction"
    bins_metric = f"modelmon_{kind}_bin_total"
    ref_metric = "modelmon_reference_bin_ratio" if kind == "feature" else "modelmon_reference_prediction_bin_ratio"
    bins = sorted(b for (m, c, n, b) in rates if m == bins_metric and c == column and n == name)
    counts = np.array([rates[(bins_metric, column, name, b)] for b in bins]) * MINUTES[window]
    ref = np.array([rates[(ref_metric, column, name, b)] for b in bins])
    n = counts.sum()
    live = counts / n
    p, q = np.maximum(live, FLOOR), np.maximum(ref, FLOOR)
    m = (p + q) / 2
    stats = {
        "psi": float(np.sum((p - q) * np.log(p / q))),
        "js_divergence": float(0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))),
        "chi_square": float(n * np.sum((live - ref) ** 2 / q)),
    }
    value = f"modelmon_{kind}_value"
    if (f"{value}_count", column, name, POSITIVE) in rates:  # values >= 0 summed, magnitudes of values < 0 apart
        count = sum(rates[(f"{value}_count", column, name, sign)] for sign in SIGNS) * MINUTES[window]
        total = rates[(f"{value}_sum", column, name, POSITIVE)] - rates[(f"{value}_sum", column, name, NEGATIVE)]
        mean = total * MINUTES[window] / count
        ref_prefix = "modelmon_reference_" + ("" if kind == "feature" else "prediction_")
        stddev = rates[(ref_prefix + "stddev", column, name, "")]
        stats["mean_shift"] = (mean - rates[(ref_prefix + "mean", column, name, "")]) / (stddev / math.sqrt(count))
    return stats


def test_recorded_drift_statistics_equal_numpys():
    path = PROMETHEUS / "tests" / "recording.test.yml"
    rates = series_rates(path)
    checked = set()
    for group in yaml.safe_load(path.read_text())["tests"]:
        for case in group["promql_expr_test"]:
            found = re.fullmatch(r"round\(model_(feature|output):modelmon_\w+:(psi|js_divergence|chi_square|mean_shift)"
                                 r"_(1h|1d), 1e-6\)", case["expr"])
            if not found:
                continue
            level, stat, window = found.groups()
            for sample in case["exp_samples"]:
                name = dict(re.findall(r'(\w+)="([^"]*)"', sample["labels"]))[level]
                expected = numpy_statistics(rates, level, name, window)[stat]
                assert sample["value"] == pytest.approx(expected, rel=1e-9, abs=1e-6), (case["expr"], name)
                checked.add((level, stat, window))
    assert checked == {(level, stat, window) for level in ("feature", "output") for window in MINUTES
                       for stat in ("psi", "js_divergence", "chi_square", "mean_shift")}
