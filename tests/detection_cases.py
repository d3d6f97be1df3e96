"""prometheus/tests/detection.test.yml: noisy series for the real rules under promtool.

The headline scenarios of issue 14 drawn by tests/detection_model.py's simulation (Poisson
rows, normal value sums), exported as the metric contract's counters of one instance, one
sample a minute: a feature whose mean shifts and an untouched one, on a busy, a quiet and a
very quiet model. `python tests/detection_cases.py` rewrites the file; tests/test_detection.py
fails when it differs. Values are 50 + 10 z (training mean 50, stddev 10), all positive.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detection_model import DAY, NUMERIC_BINS, STEP, Change, Column, divide, feature_mean_shift, simulate, window

PATH = Path(__file__).resolve().parents[1] / "prometheus" / "tests" / "detection.test.yml"
SEED = 1423
MEAN, STDDEV = 50.0, 10.0
# Two bins of the values at the training median, and the missing values.
BINS = {"00:[0,50)": NUMERIC_BINS[:5] + ["__below__"], "01:[50,100]": NUMERIC_BINS[5:10] + ["__above__"],
        "__missing__": ["__missing__"]}
# promtool runs unlisted groups first, then these in this order: the alerts read this step's values.
ORDER = ("modelmon-features-reference.rules", "modelmon-features-1h.rules", "modelmon-features-1d.rules",
         "modelmon-thresholds.rules", "modelmon-data.alerts")
LINKS = {"grafana_url": "http://localhost:3000", "runbook_base_url": "http://localhost:9098"}


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    rows_per_hour: float
    shift: float  # of feature x, in training standard deviations, from minute `at`
    at: int
    silent: tuple[int, ...]  # minutes at which no ModelmonFeatureMeanShift may fire
    fires: int  # minute by which it fires for x (and not for y)
    window: str


SCENARIOS = (
    Scenario("busy model (10 rows/s): +0.25 sd on x fires within 60 minutes, y stays silent",
             "busy", 36000, 0.25, 120, (60, 90, 120), 180, "hour"),
    Scenario("quiet model (0.2 rows/s): +0.25 sd on x fires within 60 minutes, y stays silent",
             "quiet", 720, 0.25, 120, (60, 90, 120), 180, "hour"),
    Scenario("180 rows an hour: +1 sd on x after 12 steady hours fires within 6 hours, over the day; y stays silent",
             "sparse", 180, 1.0, 720, (360, 540, 720), 1080, "day"),
)


def cumulative(x: np.ndarray) -> str:
    """A counter's samples, one a minute from 0."""
    return " ".join(f"{v:.10g}" for v in np.concatenate([[0.0], np.cumsum(x)]))


def constant(value: float, minutes: int) -> str:
    return f"{value:g}x{minutes}"


def effect(column: Column, s: Scenario) -> str:
    """The alert's value at `fires` by the simulation's formulas, as the description prints it, so
    promtool checks them against the rules. The simulation's minute i is the increase between
    samples i and i + 1 (Prometheus sees it at i + 1), so the rules evaluated at T (every 2
    minutes in promtool, all groups alike, the alerts last: ORDER) are the simulation's window
    at T - 1, the 1d rules' (offset 2m) at T - 3; and a 4m rate averages 4 minutes on
    Prometheus 2, 3 on 3: both must print alike."""
    minutes, lag = (60, 1) if s.window == "hour" else (DAY, 1 + STEP)
    printed = set()
    for rate in (3, 4):
        found = divide(window(column.value_sum, minutes, True, rate), window(column.value_count, minutes, True, rate))[0]
        printed.add(f"{found[s.fires - lag]:+.2f}")
    assert len(printed) == 1, f"{s.name}: the value is at a rounding edge, {printed}; change SEED"
    return printed.pop()


def series(s: Scenario, feature: str, column: Column, minutes: int) -> list[tuple[str, str]]:
    labels = f'job="modelmon", instance="a:8000", model="{s.model}", version="1", feature="{feature}"'
    found = []
    for name, parts in BINS.items():
        chosen = [column.names.index(p) for p in parts]
        found.append((f'modelmon_feature_bin_total{{{labels}, bin="{name}"}}', cumulative(column.bins[0][:, chosen].sum(axis=1))))
        found.append((f'modelmon_reference_bin_ratio{{{labels}, bin="{name}"}}',
                      constant(round(float(column.reference[chosen].sum()), 6), minutes)))
    values = MEAN * column.value_count[0] + STDDEV * column.value_sum[0]
    found += [(f'modelmon_feature_value_count{{{labels}, sign="positive"}}', cumulative(column.value_count[0])),
              (f'modelmon_feature_value_count{{{labels}, sign="negative"}}', constant(0, minutes)),
              (f'modelmon_feature_value_sum{{{labels}, sign="positive"}}', cumulative(np.round(values, 1))),
              (f'modelmon_feature_value_sum{{{labels}, sign="negative"}}', constant(0, minutes)),
              (f'modelmon_reference_mean{{{labels}}}', constant(MEAN, minutes)),
              (f'modelmon_reference_stddev{{{labels}}}', constant(STDDEV, minutes))]
    return found


def agrees(columns: dict[str, Column], s: Scenario) -> None:
    """The simulation's alert does what the case expects of the rules: x fires at `fires` and not
    at the silent minutes, y never (the rules at minute T are the simulation's at T - 2 to T)."""
    x, y = (feature_mean_shift(columns[feature])[0] for feature in ("x", "y"))
    assert x[s.fires - 2:s.fires + 1].all(), f"{s.name}: the simulation does not fire; change SEED"
    assert not any(x[m - 2:m + 1].any() for m in s.silent) and not y.any(), f"{s.name}: a false alarm; change SEED"


def promtool_group(rng: np.random.Generator, s: Scenario) -> str:
    minutes = s.fires + 5
    lines = [f"  - name: '{s.name}'", "    interval: 1m",
             "    external_labels: {" + ", ".join(f"{k}: {v}" for k, v in LINKS.items()) + "}", "    input_series:",
             f"      - series: 'modelmon_model_info{{job=\"modelmon\", instance=\"a:8000\", model=\"{s.model}\", "
             f"version=\"1\", reference=\"abc\"}}'", f"        values: '{constant(1, minutes)}'"]
    columns = {feature: simulate(rng, "feature", s.rows_per_hour, 1, minutes, Change(shift=shift), s.at)
               for feature, shift in (("x", s.shift), ("y", 0.0))}
    agrees(columns, s)
    for feature, column in columns.items():
        for name, values in series(s, feature, column, minutes):
            lines += [f"      - series: '{name}'", f"        values: '{values}'"]
    lines.append("    alert_rule_test:")
    for minute in s.silent:
        lines += ["      - alertname: ModelmonFeatureMeanShift", f"        eval_time: {minute}m", "        exp_alerts: []"]
    quiet = "; read over the day while the model has under 500 values an hour" if s.window == "day" else ""
    description = (f"Over the last {s.window}, the mean of input feature x of {s.model} 1 moved {effect(columns['x'], s)} "
                   f"training standard deviations from its training mean (alerts from 0.15, and more than 4.5 standard "
                   f"errors unless set per model{quiet}).")
    lines += ["      - alertname: ModelmonFeatureMeanShift", f"        eval_time: {s.fires}m", "        exp_alerts:",
              f"          - exp_labels: {{severity: warning, team: data-science, job: modelmon, model: {s.model}, "
              f"version: '1', feature: x, window: {s.window}}}",
              "            exp_annotations:",
              f"              summary: 'Mean of feature x of {s.model} 1 has shifted'",
              f"              description: '{description}'",
              "              runbook_url: 'http://localhost:9098/ModelmonFeatureMeanShift.md'",
              f"              dashboard_url: 'http://localhost:3000/d/modelmon-data/model-data?var-model={s.model}&var-version=1'",
              "      - alertname: ModelmonFeatureDrift  # PSI does not see these shifts",
              f"        eval_time: {s.fires}m", "        exp_alerts: []"]
    return "\n".join(lines)


def render() -> str:
    rng = np.random.default_rng(SEED)
    head = [f"# {line}".rstrip() for line in (__doc__ or "").strip().splitlines()]
    return "\n".join([*head, "rule_files:", "  - ../rules/*.yml", "", "evaluation_interval: 2m",
                      "group_eval_order:", *(f"  - {name}" for name in ORDER), "", "tests:",
                      *(promtool_group(rng, s) for s in SCENARIOS)]) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
