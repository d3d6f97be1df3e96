"""The data-science alerts' false-alarm rates and detection delays, by simulation (issue 14).

A model of the rules at the metric contract's level: each minute a column gets a Poisson
number of rows, split among its bins by a multinomial draw around the shares of the moment,
and its numeric values add a normal draw to the value sum. The rules' formulas are then
evaluated as Prometheus does: every 2 minutes, bins and value summaries summed over their 4m
rates (`*:rate4m`, a 4-minute moving average) over the hour's 30 steps, and over the day's
720 up to 2 minutes before for the 1d group, recorded every 4 minutes; the alerts, every
minute, read the latest values recorded, and fire once their condition held for their
`for:`, and keep firing for their `keep_firing_for:`.
prometheus/tests/detection.test.yml checks the real rules on the headline scenarios.
`python tests/detection_model.py` prints the tables of docs/alerting.md ("Detection");
tests/test_detection.py fails when they differ.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modelmon.serving.metrics import ALERT_THRESHOLDS, MEAN_SHIFT_MIN_EFFECT

DAY = 1440  # minutes
STEP, RATE = 2, 4  # the 1h groups run every 2 minutes, on 4m rates
FLOOR = 1e-4  # the drift rules' floor on shares
SEED = 14

# The alerts' defaults (prometheus/rules/data.alerts.yml, thresholds.rules.yml).
MIN_VALUES_1H, MIN_VALUES_1D = 500, 1000
PSI_WARNING = 0.1
SHARE_EXCESS, SHARE_Z = 0.05, 4.5
FEATURE_MEAN_Z = ALERT_THRESHOLDS["ModelmonFeatureMeanShift"]
FEATURE_MEAN_EFFECT, FEATURE_MEAN_KEEP = 0.15, 10  # no for:, keep_firing_for: 10m
PREDICTION_MEAN_Z, PREDICTION_MEAN_EFFECT = ALERT_THRESHOLDS["ModelmonPredictionMeanShift"], MEAN_SHIFT_MIN_EFFECT

# Training data: standard normal columns binned at their deciles within their range (+-3.5),
# of which a feature 2% missing, a feature often missing (18%: LotFrontage of the Ames data
# has 17.7%), where the missing share's standard error matters, and an output never missing;
# and a categorical feature of 8 equally likely categories, 1% of its training values outside
# the top categories (__unseen__).
DECILES = [-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816]
RANGE = 3.5
KINDS = {"feature": 0.02, "often-missing": 0.18, "output": 0.0}  # numeric columns: training missing share
UNSEEN = 0.01
NUMERIC_BINS = [f"{i:02d}" for i in range(10)] + ["__below__", "__above__", "__missing__"]
CATEGORICAL_BINS = [f"c{i}" for i in range(8)] + ["__unseen__", "__missing__"]


@dataclass(frozen=True)
class Change:
    """What happens to a column from the change on: mean shift in training standard
    deviations, and shares (of all rows) moved to missing, above the range, or unseen."""

    shift: float = 0.0
    missing: float = 0.0
    above: float = 0.0
    unseen: float = 0.0


STEADY = Change()


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def numeric_shares(change: Change, missing: float) -> np.ndarray:
    """Shares of NUMERIC_BINS for values N(shift, 1), `missing` of them missing in training."""
    edges = [-RANGE, *DECILES, RANGE]
    inside = [normal_cdf(b - change.shift) - normal_cdf(a - change.shift) for a, b in zip(edges, edges[1:])]
    values = 1 - missing - change.missing - change.above
    shares = [values * p for p in inside]
    shares += [values * normal_cdf(-RANGE - change.shift), values * (1 - normal_cdf(RANGE - change.shift))]
    shares[-1] += change.above
    return np.array([*shares, missing + change.missing])


def categorical_shares(change: Change) -> np.ndarray:
    known = (1 - UNSEEN - change.unseen) / 8
    return np.array([known] * 8 + [UNSEEN + change.unseen, 0.0])


@dataclass
class Column:
    """Per-minute increases of one column's counters, replicates x minutes (x bins)."""

    names: list[str]
    reference: np.ndarray
    bins: np.ndarray
    value_count: np.ndarray
    value_sum: np.ndarray


def simulate(rng: np.random.Generator, kind: str, rows_per_hour: float, reps: int, minutes: int,
             change: Change = STEADY, at: int | None = None) -> Column:
    """`reps` runs of a column over `minutes`, the change applying from minute `at`. Rows are
    Poisson, so each bin's count is an independent Poisson draw (a multinomial split of a
    Poisson total), and the value sum a normal draw around count x mean, variance count."""
    shares = categorical_shares if kind == "categorical" else lambda c: numeric_shares(c, KINDS[kind])
    names = CATEGORICAL_BINS if kind == "categorical" else NUMERIC_BINS
    at = minutes if at is None else at
    changed = np.arange(minutes)[:, None] >= at
    expected = rows_per_hour / 60 * np.where(changed, shares(change), shares(STEADY))
    bins = rng.poisson(expected, size=(reps, *expected.shape))
    numeric = bins[:, :, :-1].sum(axis=2)  # every bin but __missing__
    value_sum = rng.normal(numeric * np.where(changed[:, 0], change.shift, 0.0), np.sqrt(numeric))
    return Column(names, shares(STEADY), bins, numeric, value_sum)


def window(x: np.ndarray, minutes: int, smooth: bool, rate: int = RATE) -> np.ndarray:
    """Sum over the last `minutes` at every minute: of the increases, or when `smooth`, as the
    recorded windows do, of the steps every STEP minutes ending there (the same parity), each
    the 4m rate times 120 s. A 4m rate of one-minute samples is the moving average of the last
    `rate` minutes' increases: 4 on Prometheus 2, 3 on 3 (its ranges are open on the left,
    and it extrapolates the 3 to 4 minutes). The tables use 4."""
    if smooth:
        steps = window(x, rate, smooth=False) / rate * STEP
        total = np.zeros_like(steps, dtype=float)
        for parity in range(STEP):
            total[:, parity::STEP] = np.cumsum(steps[:, parity::STEP], axis=1, dtype=float)
    else:
        total = np.cumsum(x, axis=1, dtype=float)
    shifted = np.zeros_like(total)
    shifted[:, minutes:] = total[:, :-minutes]
    return total - shifted


def recorded(x: np.ndarray, every: int = 1) -> np.ndarray:
    """What an alert reads at each minute of a series recorded every `every` minutes (from
    minute 0): the latest evaluation before this minute's, as the alert groups run before the
    recording groups (data.alerts.yml sorts first) in promtool, and at any phase in Prometheus."""
    latest = (np.maximum(np.arange(x.shape[1]) - 1, 0) // every) * every
    return x[:, latest]


def hourly(x: np.ndarray) -> np.ndarray:
    """The 1h groups' windows, recorded every STEP minutes, as the alerts read them."""
    return recorded(window(x, 60, smooth=True), STEP)


def daily(x: np.ndarray) -> np.ndarray:
    """The 1d groups' windows: the 1h groups' steps of the day up to 2 minutes before (offset
    2m), recorded every 4 minutes."""
    smoothed = window(x, DAY, smooth=True)
    day = np.zeros_like(smoothed)
    day[:, STEP:] = smoothed[:, :-STEP]
    return recorded(day, 4)


def held(condition: np.ndarray, minutes: int) -> np.ndarray:
    """Firing: the condition held at the last `minutes` + 1 evaluations, one a minute."""
    runs = np.cumsum(condition, axis=1)
    before = np.zeros_like(runs)
    before[:, minutes + 1:] = runs[:, :-minutes - 1]
    return runs - before == minutes + 1


def kept(firing: np.ndarray, minutes: int) -> np.ndarray:
    """Firing, with `keep_firing_for`: also the `minutes` after the condition last held."""
    runs = np.cumsum(firing, axis=1)
    before = np.zeros_like(runs)
    before[:, minutes + 1:] = runs[:, :-minutes - 1]
    return runs - before > 0


def divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


def drift(column: Column) -> np.ndarray:
    """ModelmonFeatureDrift, ModelmonPredictionDrift: PSI less its sampling bias (k - 1) / n,
    in the warning band."""
    counts = window(column.bins, 60, smooth=True)
    n = counts.sum(axis=2)
    live = np.maximum(divide(counts, n[..., None]), FLOOR)
    ref = np.maximum(column.reference, FLOOR)
    psi = np.sum((live - ref) * np.log(live / ref), axis=2)
    corrected = recorded(psi, STEP) - divide(np.count_nonzero(column.reference) - 1, recorded(n, STEP))
    return held((corrected >= PSI_WARNING) & (recorded(n, STEP) >= MIN_VALUES_1H), 2)


def share_excess(names: tuple[str, ...]) -> Callable[[Column], np.ndarray]:
    """ModelmonFeatureMissing, ModelmonUnseenCategories, ModelmonOutOfRange on these bins."""
    def alert(column: Column) -> np.ndarray:
        counts = window(column.bins, 60, smooth=True)
        n = counts.sum(axis=2)
        chosen = [column.names.index(name) for name in names]
        ref = column.reference[chosen].sum()
        excess = divide(counts[:, :, chosen].sum(axis=2), n) - ref
        z = divide(excess, np.sqrt(divide(ref * (1 - ref), n)))
        condition = (recorded(excess, STEP) > SHARE_EXCESS) & (recorded(z, STEP) > SHARE_Z)
        return held(condition & (recorded(n, STEP) >= MIN_VALUES_1H), 2)
    return alert


def mean_condition(effect: np.ndarray, count: np.ndarray, z: float, min_effect: float) -> np.ndarray:
    """|mean_shift| > z and |effect_size| >= min_effect (training mean 0, stddev 1)."""
    return (np.abs(effect * np.sqrt(count)) > z) & (np.abs(effect) >= min_effect)


def feature_mean_shift(column: Column) -> np.ndarray:
    """ModelmonFeatureMeanShift: over the hour with 500 values, else over the day with 1000."""
    count = hourly(column.value_count)
    values_1h = hourly(column.bins.sum(axis=2))
    hour = mean_condition(divide(hourly(column.value_sum), count), count, FEATURE_MEAN_Z, FEATURE_MEAN_EFFECT)
    count_1d = daily(column.value_count)
    day = mean_condition(divide(daily(column.value_sum), count_1d), count_1d, FEATURE_MEAN_Z, FEATURE_MEAN_EFFECT)
    quiet = (daily(column.bins.sum(axis=2)) >= MIN_VALUES_1D) & (values_1h < MIN_VALUES_1H)
    return kept(hour & (values_1h >= MIN_VALUES_1H) | day & quiet, FEATURE_MEAN_KEEP)


def prediction_mean_shift(column: Column) -> np.ndarray:
    count = hourly(column.value_count)
    effect = divide(hourly(column.value_sum), count)
    condition = mean_condition(effect, count, PREDICTION_MEAN_Z, PREDICTION_MEAN_EFFECT)
    return held(condition & (hourly(column.bins.sum(axis=2)) >= MIN_VALUES_1H), 2)


@dataclass(frozen=True)
class Alert:
    name: str
    kind: str  # the column it watches: feature, often-missing, categorical, output
    fires: Callable[[Column], np.ndarray]
    changes: tuple[tuple[str, Change], ...]  # (what the table calls it, the change)
    daily: bool = False  # reads the day when the hour has under 500 values


MEAN_SHIFTS = (("mean +0.25 sd", Change(shift=0.25)), ("mean +0.5 sd", Change(shift=0.5)),
               ("mean +1 sd", Change(shift=1.0)))
ALERTS = (
    Alert("ModelmonFeatureMeanShift", "feature", feature_mean_shift, MEAN_SHIFTS, daily=True),
    Alert("ModelmonFeatureDrift", "feature", drift, MEAN_SHIFTS),
    Alert("ModelmonFeatureMissing", "often-missing", share_excess(("__missing__",)),
          (("missing +10 points", Change(missing=0.1)), ("missing +30 points", Change(missing=0.3)))),
    Alert("ModelmonOutOfRange", "feature", share_excess(("__below__", "__above__")),
          (("above the range +10 points", Change(above=0.1)),)),
    Alert("ModelmonUnseenCategories", "categorical", share_excess(("__unseen__",)),
          (("unseen +20 points", Change(unseen=0.2)),)),
    Alert("ModelmonPredictionMeanShift", "output", prediction_mean_shift, MEAN_SHIFTS[1:]),
    Alert("ModelmonPredictionDrift", "output", drift, MEAN_SHIFTS[1:]),
)

# Rows an hour: 10 a second, 0.2 a second, and a model under the 500-values gate of the hour,
# where only alerts with a daily branch can fire.
TRAFFIC = {"10/s": 36000, "0.2/s": 720, "180/h": 180}
FEATURE_DAYS = {"10/s": 500, "0.2/s": 2000, "180/h": 500}  # simulated per column kind
RUNS = 200  # per delay scenario
WARM_UP = {"10/s": 120, "0.2/s": 120, "180/h": DAY + 60}  # steady minutes: full windows
HORIZON = {"10/s": 240, "0.2/s": 240, "180/h": DAY}  # minutes after the change
GATED = "gated"  # under 500 values an hour, for an alert without a daily branch


def applies(alert: Alert, traffic: str) -> bool:
    return alert.daily or TRAFFIC[traffic] >= MIN_VALUES_1H


def false_alarms(rng: np.random.Generator, traffic: str) -> dict[str, int]:
    """Firings (rising edges) of each alert in FEATURE_DAYS[traffic] steady days of its
    column kind, after a day of warm-up; the alerts of one kind read the same columns."""
    days_per_run = 10
    found = {alert.name: 0 for alert in ALERTS if applies(alert, traffic)}
    for kind in sorted({alert.kind for alert in ALERTS}):
        readers = [alert for alert in ALERTS if alert.kind == kind and alert.name in found]
        for _ in range(FEATURE_DAYS[traffic] // days_per_run if readers else 0):
            column = simulate(rng, kind, TRAFFIC[traffic], 1, DAY * (days_per_run + 1))
            for alert in readers:
                firing = alert.fires(column)[:, DAY - 1:]
                found[alert.name] += int(np.sum(firing[:, 1:] & ~firing[:, :-1]))
    return found


def delays(rng: np.random.Generator, alert: Alert, traffic: str, change: Change) -> np.ndarray:
    """Minutes from the change to the first firing in each run (inf: not within the horizon)."""
    warm_up = WARM_UP[traffic]
    column = simulate(rng, alert.kind, TRAFFIC[traffic], RUNS, warm_up + HORIZON[traffic], change, warm_up)
    firing = alert.fires(column)[:, warm_up:]
    return np.where(firing.any(axis=1), firing.argmax(axis=1) + 1.0, np.inf)


def minutes(value: float) -> str:
    if math.isinf(value):
        return "never"
    return f"{value:.0f} min" if value < 120 else f"{value / 60:.1f} h"


@dataclass(frozen=True)
class Results:
    false_alarms: dict[tuple[str, str], int]  # (alert, traffic) -> firings in FEATURE_DAYS[traffic]
    delays: dict[tuple[str, str, str], np.ndarray]  # (alert, change, traffic) -> minutes per run


@functools.cache
def results() -> Results:
    """Every simulation, from one seed (about 15 s)."""
    rng = np.random.default_rng(SEED)
    found = {}
    for traffic in TRAFFIC:
        found.update({(name, traffic): count for name, count in false_alarms(rng, traffic).items()})
    runs = {(alert.name, label, traffic): delays(rng, alert, traffic, change)
            for alert in ALERTS for label, change in alert.changes for traffic in TRAFFIC if applies(alert, traffic)}
    return Results(found, runs)


def false_alarm_table(found: Results) -> str:
    lines = ["| alert | " + " | ".join(f"{t} ({TRAFFIC[t]:,} rows/h)" for t in TRAFFIC) + " |",
             "|---|" + "---|" * len(TRAFFIC)]
    for alert in ALERTS:
        cells = [f"{found.false_alarms[alert.name, t]} in {FEATURE_DAYS[t]:,}" if applies(alert, t) else GATED
                 for t in TRAFFIC]
        lines.append(f"| {alert.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def delay_cell(found: Results, alert: Alert, label: str, traffic: str) -> str:
    if not applies(alert, traffic):
        return GATED
    median, p95 = np.percentile(found.delays[alert.name, label, traffic], [50, 95], method="higher")
    return f"{minutes(median)} / {minutes(p95)}"


def delay_table(found: Results) -> str:
    lines = ["| alert | change | " + " | ".join(TRAFFIC) + " |", "|---|---|" + "---|" * len(TRAFFIC)]
    for alert in ALERTS:
        for label, _ in alert.changes:
            cells = [delay_cell(found, alert, label, traffic) for traffic in TRAFFIC]
            lines.append(f"| {alert.name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables() -> str:
    """The two tables of docs/alerting.md's "Detection" section."""
    return false_alarm_table(results()) + "\n\n" + delay_table(results()) + "\n"


if __name__ == "__main__":
    print(tables(), end="")
