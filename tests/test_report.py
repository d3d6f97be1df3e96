"""modelmon report: statistics checked against scipy called directly on the same values,
drift decided on effect size at large n, event files from a real monitor, Elasticsearch."""
from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import training_frame
from elastic import elastic, es, namespace  # noqa: F401 (fixtures)
from prometheus_client import CollectorRegistry
from scipy import stats

from modelmon import ModelMonitor, Reference

from modelmon.analysis import event_source
from modelmon.cli import main
from modelmon.analysis.drift import SHARE_FLOOR
from modelmon.pipeline.events import EventLog, Redaction
from modelmon.analysis import parallel
from modelmon.analysis.live import Live, LiveData
from modelmon.analysis.report import analyse
from modelmon.pipeline.shipper import Shipper, ShipperConfig

CITIES = ["paris", "lyon", "nice"]
ROOT = Path(__file__).resolve().parents[1]


def drifted_frame(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Live data of a new version: area shifted by half a standard deviation, more Nice."""
    rng = np.random.default_rng(seed)
    frame = training_frame(rows, seed)
    frame["area"] = frame["area"] + 10.0
    frame["city"] = rng.choice(CITIES, rows, p=[0.3, 0.3, 0.4]).astype(object)
    return frame


def observe(directory: Path, reference: Reference, frame: dict, version: str, **log_options) -> None:
    """Log every row of ``frame`` as a prediction of ``version``, through a real monitor."""
    log = EventLog(directory, **log_options)
    monitor = ModelMonitor("house", version, reference, registry=CollectorRegistry(), events=log)
    for i in range(len(frame["price"])):
        row = {"area": float(frame["area"][i]), "rooms": float(frame["rooms"][i]), "city": frame["city"][i]}
        monitor.observe(row, float(frame["price"][i]), prediction_id=f"{version}-{i}")
    log.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Training CSV and reference; events of a faithful 1.0 and a drifted 1.1."""
    root = tmp_path_factory.mktemp("report")
    training = training_frame(4000, seed=1)
    reference = Reference.from_data(training, model="house", version="1.0", prediction="price")
    reference.save(root / "reference.yaml")
    with (root / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(training))
        writer.writerows(zip(*training.values()))
    live = {"1.0": training_frame(1500, seed=2), "1.1": drifted_frame(1500, seed=3)}
    for version, frame in live.items():
        observe(root / "events", reference, frame, version)
    observe(root / "clean", reference, live["1.0"], "1.0")
    observe(root / "drifted", reference, live["1.1"], "1.1")
    return root, reference, training, live


def report(capsys, tmp_path, *args) -> tuple[int, dict, str]:
    code = main(["report", *map(str, args), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    path = tmp_path / "out.json"
    return code, (json.loads(path.read_text(), parse_constant=_reject) if path.exists() else {}), err


def _reject(constant):
    raise ValueError(f"not strict JSON: {constant}")


def column(rep: dict, name: str) -> dict:
    return next(c for c in rep["columns"] if c["name"] == name)


def result(rep_column: dict, name: str) -> dict:
    return next(t for t in rep_column["tests"] if t["test"] == name)


def close(actual: float, expected: float) -> bool:
    return actual == pytest.approx(expected, rel=1e-6, abs=1e-300)


def test_statistics_and_p_values_agree_with_scipy(setup, tmp_path, capsys):
    root, reference, training, live = setup
    code, rep, _ = report(capsys, tmp_path, "--reference", root / "reference.yaml", "--events", root / "events",
                          "--training", root / "train.csv")
    assert code == 0 and rep["events"]["read"] == 3000
    area_live = np.concatenate([live["1.0"]["area"], live["1.1"]["area"]])

    area = column(rep, "area")
    assert area["comparison"] == "raw training values"
    ks = stats.ks_2samp(training["area"], area_live)
    assert close(result(area, "ks_2samp")["statistic"], ks.statistic)
    assert close(result(area, "ks_2samp")["p_value"], ks.pvalue)
    distance = stats.wasserstein_distance(training["area"], area_live)
    assert close(result(area, "wasserstein")["statistic"], distance)
    assert close(result(area, "wasserstein")["effect_value"], distance / np.std(training["area"], ddof=1))

    # city: chi-square goodness of fit on the reference bins, expected shares floored and renormalised
    city = column(rep, "city")
    profile = reference.features["city"]
    live_city = np.concatenate([live["1.0"]["city"], live["1.1"]["city"]])
    observed = np.array([np.sum(live_city == c) for c in profile.categories], dtype=float)
    shares = np.array([profile.shares[c] for c in profile.categories])
    assert set(profile.shares) - set(profile.categories) == {"__unseen__", "__missing__", "__invalid__"}
    assert all(profile.shares[b] == 0 for b in ("__unseen__", "__missing__", "__invalid__"))
    n = observed.sum()
    chi = stats.chisquare(observed, n * shares / shares.sum())
    assert close(result(city, "chi_square")["statistic"], chi.statistic)
    assert close(result(city, "chi_square")["p_value"], chi.pvalue)
    assert close(result(city, "chi_square")["effect_value"], math.sqrt(chi.statistic / (n * 2)))

    # PSI and Jensen-Shannon with the rules' floor, on all bins (empty ones included)
    p = np.maximum(np.append(observed / n, [0, 0, 0]), SHARE_FLOOR)
    q = np.maximum(np.append(shares, [0, 0, 0]), SHARE_FLOOR)
    psi = np.sum((p - q) * np.log(p / q))
    js = (np.sum(p * np.log(p) + q * np.log(q) - (p + q) * np.log((p + q) / 2))) / 2
    assert close(result(city, "psi")["statistic"], psi) and close(result(city, "jensen_shannon")["statistic"], js)
    assert close(result(city, "psi")["p_value"], stats.chi2.sf(psi / (1 / n + 1 / reference.rows), 2))

    # across versions: Kruskal-Wallis (numeric), chi-square of independence (categorical)
    h = stats.kruskal(live["1.0"]["area"], live["1.1"]["area"])
    groups = area["groups"]
    assert groups["field"] == "modelmon.version" and groups["sizes"] == {"1.0": 1500, "1.1": 1500}
    assert close(groups["test"]["statistic"], h.statistic) and close(groups["test"]["p_value"], h.pvalue)
    assert close(groups["test"]["effect_value"], h.statistic / 2999)
    table = np.array([[np.sum(live[v]["city"] == c) for c in profile.categories] for v in ("1.0", "1.1")])
    chi2, p_ind, _, _ = stats.chi2_contingency(table, correction=False)
    city_groups = city["groups"]["test"]
    assert close(city_groups["statistic"], chi2) and close(city_groups["p_value"], p_ind)
    assert close(city_groups["effect_value"], stats.contingency.association(table, method="cramer"))

    # Benjamini-Hochberg over every p-value of the report
    tested = [t for c in rep["columns"] for t in [*c["tests"], c["groups"]["test"]] if t and t["p_value"] is not None]
    expected = stats.false_discovery_control([t["p_value"] for t in tested], method="bh")
    assert len(tested) == 12
    assert all(close(t["p_adjusted"], e) for t, e in zip(tested, expected))

    assert rep["drifting"] == ["area", "city"]
    assert column(rep, "rooms")["drift"] is False and column(rep, "price")["drift"] is False
    assert area["groups"]["differs"] and not column(rep, "rooms")["groups"]["differs"]


def test_psi_and_jensen_shannon_floor_empty_shares_as_the_prometheus_rules(reference):
    # the share rules (estimated.rules.yml clamps variances at 0, which is no share floor)
    rules = "".join((ROOT / "prometheus" / "rules" / name).read_text()
                    for name in ("features.rules.yml", "predictions.rules.yml"))
    floors = set(re.findall(r"clamp_min\([^()]*,\s*([0-9.e-]+)\)", rules))
    assert floors == {"1e-4"} and float(floors.pop()) == SHARE_FLOOR

    rng = np.random.default_rng(5)
    frame = training_frame(2000, seed=6)
    frame["city"] = rng.choice(["paris", "lyon", "nice", "oslo", None], 2000, p=[.45, .3, .2, .04, .01]).astype(object)
    rep = analyse(reference, _live(frame))
    city, profile = column(rep, "city"), reference.features["city"]
    live = np.array([b["live"] for b in city["bins"]])
    assert [b["label"] for b in city["bins"]] == profile.bin_labels
    assert live[profile.bin_labels.index("__unseen__")] == np.mean(frame["city"] == "oslo")
    ref = np.array([profile.shares[label] for label in profile.bin_labels])
    p, q = np.maximum(live, SHARE_FLOOR), np.maximum(ref, SHARE_FLOOR)
    assert close(result(city, "psi")["statistic"], np.sum((p - q) * np.log(p / q)))
    m = (p + q) / 2
    js = (np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m))) / 2
    assert close(result(city, "jensen_shannon")["statistic"], js)
    assert result(city, "psi")["statistic"] > 0.2 and rep["drifting"] == ["city"]


def test_cramers_v_stays_in_range_when_values_land_where_training_had_none(reference):
    """Issue 14: the demo's LotFrontage had a Cramér's V of 4.23, its __above__ bin (no
    training share, floored at 1e-4) in the chi-square. Bins the training data never had
    are reported on their own, by their live share; V stays in [0, 1]; the verdict stays."""
    rng = np.random.default_rng(14)
    edges = reference.features["area"].edges
    for rows, above in ((100_000, 0.3), (100_000, 0.02), (5_000, 0.3), (2_000, 0.0)):
        frame = training_frame(rows, seed=15)
        out = rng.random(rows) < above
        frame["area"] = np.where(out, edges[-1] + rng.exponential(20.0, rows), frame["area"])
        area = column(analyse(reference, _live(frame)), "area")
        v = result(area, "chi_square")["effect_value"]
        assert 0.0 <= v <= 1.0, (rows, above, v)
        # the old construction on the same counts: past 1 (or inflated) whenever values land there
        counts = np.array([b["count"] for b in area["bins"]], dtype=float)
        shares = np.maximum([b["reference"] for b in area["bins"]], SHARE_FLOOR)
        chi2 = stats.chisquare(counts, shares / shares.sum() * rows).statistic
        old_v = math.sqrt(chi2 / (rows * (len(counts) - 1)))
        share = np.mean((frame["area"] > edges[-1]) | (frame["area"] < edges[0]))
        if above:
            assert (old_v > 1.5 if above >= 0.3 else old_v > 3 * v) and close(result(area, "new_bins")["statistic"], share)
            assert area["verdict"] == "drift" and result(area, "new_bins")["exceeded"]
        else:
            assert "new_bins" not in [t["test"] for t in area["tests"]] and area["verdict"] == "no drift"


def test_text_columns_are_compared_on_their_token_count_bins():
    rng = np.random.default_rng(1)
    words = ["big", "house", "garden", "old", "new", "near", "park"]

    def notes(n: int, shortest: int, longest: int) -> np.ndarray:
        return np.array([" ".join(rng.choice(words, rng.integers(shortest, longest))) for _ in range(n)], dtype=object)

    training = {**training_frame(2000), "note": notes(2000, 1, 8)}
    reference = Reference.from_data(training, model="house", version="1.0", prediction="price", text=["note"])
    # notes longer than any in training fall in a bin the training data never had: tested on its own
    for longest, drifts, tests in ((8, False, ["chi_square", "psi", "jensen_shannon"]),
                                   (15, True, ["chi_square", "new_bins", "psi", "jensen_shannon"])):
        frame = {**training_frame(1000, seed=3), "note": notes(1000, 1, longest)}
        live = LiveData({k: frame[k].tolist() for k in frame}, ["1.0"] * 1000, "modelmon.version", events=1000)
        note = column(analyse(reference, live), "note")
        assert note["kind"] == "text" and [t["test"] for t in note["tests"]] == tests
        assert note["drift"] is drifts


def _live(frame: dict, version: str = "1.0") -> LiveData:
    n = len(frame["price"])
    return LiveData({k: frame[k].tolist() for k in ("area", "rooms", "city", "price")}, [version] * n,
                    "modelmon.version", events=n)


def test_at_100000_rows_drift_is_decided_on_effect_size():
    training = training_frame(100_000, seed=11)
    reference = Reference.from_data(training, model="house", version="1.0", prediction="price")

    same = analyse(reference, _live(training_frame(100_000, seed=12)), training)
    assert same["drifting"] == []
    assert all(t["effect_value"] < 0.01 for c in same["columns"] for t in c["tests"] if t["effect_value"] is not None)

    slightly = training_frame(100_000, seed=13)
    slightly["area"] = slightly["area"] + 0.04 * 20.0  # 0.04 sd: significant at this n, but no effect worth a flag
    small = analyse(reference, _live(slightly), training)
    ks = result(column(small, "area"), "ks_2samp")
    assert ks["p_adjusted"] < 1e-6 and not ks["exceeded"]
    assert small["drifting"] == []

    shifted = analyse(reference, _live(drifted_frame(100_000, seed=14)), training)
    assert shifted["drifting"] == ["area", "city"]
    area = column(shifted, "area")
    assert result(area, "ks_2samp")["exceeded"]
    assert result(area, "wasserstein")["effect_value"] == pytest.approx(0.5, abs=0.02)
    assert result(column(shifted, "city"), "chi_square")["exceeded"]


def wide_frame(rows: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """15 numeric features num<i> ~ N(i, 1 + i/10), shifted by ``shift`` standard deviations, and a price."""
    rng = np.random.default_rng(seed)
    frame = {f"num{i}": rng.normal(i + shift * (1 + i / 10), 1 + i / 10, rows) for i in range(15)}
    frame["price"] = rng.lognormal(12, 0.4, rows)
    return frame


def _wide_live(frame: dict) -> LiveData:
    n = len(frame["price"])
    return LiveData({k: v.tolist() for k, v in frame.items()}, ["1.0"] * n, "modelmon.version", events=n)


def test_small_samples_are_called_only_with_confidence():
    """The issue's case: 105 rows shifted by 0.2 sd (KS D 0.08, under its 0.1 threshold) were
    called drifted on up to 6 of 15 features; 100,000 such rows on none."""
    training = wide_frame(20_000, seed=7)
    reference = Reference.from_data(training, model="wide", version="1.0", prediction="price")
    numeric = [f"num{i}" for i in range(15)]
    undecided = 0
    for seed in range(7):
        # on the reference bins at 0.2 sd; with raw training values at 0.08 sd, as 0.2 sd is a
        # Wasserstein distance of 0.2 sd, over that effect's 0.1 threshold
        for raw, shift in ((None, 0.2), (training, 0.08)):
            live = _wide_live(wide_frame(105, seed=100 + seed, shift=shift))
            rep = analyse(reference, live, raw)
            assert rep["drifting"] == [], (seed, raw is not None, rep["drifting"])
            verdicts = [column(rep, name)["verdict"] for name in numeric]
            assert set(verdicts) <= {"no drift", "too few rows to call"}
            undecided += verdicts.count("too few rows to call")
            ks = result(column(rep, "num3"), "ks_2samp" if raw is not None else "ks_binned")
            assert ks["effect_lower"] < ks["effect_value"] < ks["effect_upper"]
    assert undecided > 0  # the report says when 105 rows cannot settle it

    big = analyse(reference, _wide_live(wide_frame(100_000, seed=99, shift=0.2)))
    # binned D 0.074-0.086; its interval, +/- 0.015, mostly the 20,000 training rows' own noise
    verdicts = [column(big, name)["verdict"] for name in numeric]
    assert big["drifting"] == [] and verdicts.count("no drift") >= 12
    assert set(verdicts) <= {"no drift", "too few rows to call"}
    assert all(result(column(big, name), "ks_binned")["effect_upper"] < 0.105 for name in numeric)

    shifted = _wide_live(wide_frame(105, seed=200, shift=1.0))  # KS D 0.38
    for raw in (None, training):
        rep = analyse(reference, shifted, raw)
        assert rep["drifting"] == numeric, raw is not None
        assert all(column(rep, name)["verdict"] == "drift" for name in numeric)


def test_without_training_data_numeric_columns_fall_back_to_the_reference_bins(setup, tmp_path, capsys):
    root, reference, training, live = setup
    code, rep, _ = report(capsys, tmp_path, "--reference", root / "reference.yaml", "--events", root / "drifted")
    area = column(rep, "area")
    assert code == 0 and area["comparison"] == "reference bins"
    assert [t["test"] for t in area["tests"]] == ["ks_binned", "chi_square", "new_bins", "psi", "jensen_shannon"]
    outside = sum(b["live"] for b in area["bins"] if b["label"] in ("__below__", "__above__"))
    assert outside > 0 and close(result(area, "new_bins")["statistic"], outside)
    assert any("--training" in note and "Wasserstein not run" in note for note in area["notes"])
    assert "Wasserstein not run" in (tmp_path / "out.html").read_text()

    # D at the reference's edges, from the live values and the reference's cumulative shares
    x, profile = live["1.1"]["area"], reference.features["area"]
    live_cdf = [np.mean(x < e) for e in profile.edges[:-1]] + [np.mean(x <= profile.edges[-1])]
    in_range = [profile.shares[label] for label in profile.bin_labels[:-4]]
    reference_cdf = np.concatenate([[0.0], np.cumsum(in_range)])
    binned = result(area, "ks_binned")["statistic"]
    assert close(binned, np.max(np.abs(np.array(live_cdf) - reference_cdf)))
    assert binned <= stats.ks_2samp(training["area"], x).statistic  # a lower bound of the raw D
    assert rep["drifting"] == ["area", "city"]


def test_fail_on_drift_sets_the_exit_code(setup, tmp_path, capsys):
    root, *_ = setup
    base = ["--reference", root / "reference.yaml", "--training", root / "train.csv", "--fail-on-drift"]
    assert report(capsys, tmp_path, *base, "--events", root / "events")[0] == 1
    code, rep, _ = report(capsys, tmp_path, *base, "--events", root / "clean")
    assert code == 0 and rep["drifting"] == [] and rep["events"]["versions"] == {"1.0": 1500}
    assert column(rep, "area")["groups"]["test"] is None  # one version: nothing to compare


def test_segments_by_a_label_or_an_input(setup, tmp_path, capsys):
    root, reference, _, live = setup
    events = tmp_path / "events"
    observe(events, reference, live["1.0"], "1.0", labels={"region": "eu"})
    observe(events, reference, live["1.1"], "1.0", labels={"region": "us"})
    args = ["--reference", root / "reference.yaml", "--events", events]
    _, rep, _ = report(capsys, tmp_path, *args, "--segment", "labels.region")
    groups = column(rep, "area")["groups"]
    assert groups["field"] == "labels.region" and groups["sizes"] == {"eu": 1500, "us": 1500}
    assert groups["differs"] and column(rep, "city")["groups"]["differs"]
    assert not column(rep, "rooms")["groups"]["differs"]
    _, rep, _ = report(capsys, tmp_path, *args, "--segment", "city")
    assert set(column(rep, "area")["groups"]["sizes"]) == set(CITIES)


def test_memory_is_bounded_by_the_sample_and_the_segment_cap(setup, tmp_path, capsys):
    root, reference, training, live = setup
    args = ["--reference", root / "reference.yaml", "--events", root / "events", "--training", root / "train.csv"]
    _, full, _ = report(capsys, tmp_path, *args)
    _, small, _ = report(capsys, tmp_path, *args, "--sample-size", "500", "--segment", "city", "--max-segments", "2")
    assert full["sample"] == {"size": 100_000, "rows": 3000, "of_rows": 3000, "seed": 0,
                              "method": full["sample"]["method"]}
    assert small["sample"]["rows"] == 500 and small["sample"]["of_rows"] == 3000
    area = column(small, "area")
    assert area["n"] == 3000 and area["sample_n"] == 500  # bins over every row, raw tests on the sample
    assert any("uniform sample of 500 of the 3000" in note for note in area["notes"])
    assert column(full, "area")["bins"] == area["bins"]
    # the sample is uniform: its KS D against training is near the full one's
    assert abs(result(area, "ks_2samp")["statistic"] - result(column(full, "area"), "ks_2samp")["statistic"]) < 0.06
    # two segments kept, the third counted as __other__, and said so
    groups = column(small, "city")["groups"]
    assert len(groups["sizes"]) == 3 and "__other__" in groups["sizes"] and sum(groups["sizes"].values()) == 3000
    assert small["segments"]["lumped_rows"] == groups["sizes"]["__other__"] > 0
    assert any("more than 2 segments" in note for note in small["notes"])
    assert "counted together as __other__" in (tmp_path / "out.html").read_text()
    # a fixed seed: the same sample, the same report
    _, again, _ = report(capsys, tmp_path, *args, "--sample-size", "500", "--segment", "city", "--max-segments", "2")
    for rep in (small, again):
        del rep["generated_at"]
    assert again == small


def split_events(source: Path, target: Path, parts: int) -> Path:
    """The event lines of ``source`` in ``parts`` files of ``target``, in order."""
    lines = [line for f in sorted(source.glob("predictions-*.jsonl")) for line in f.read_text().splitlines(True)]
    target.mkdir()
    for i in range(parts):
        (target / f"predictions-{i}.jsonl").write_text("".join(lines[len(lines) * i // parts:
                                                                   len(lines) * (i + 1) // parts]))
    return target


def test_jobs_give_the_report_of_one_process(setup, tmp_path, capsys):
    root, *_ = setup
    events = split_events(root / "events", tmp_path / "split", 3)
    args = ["--reference", root / "reference.yaml", "--training", root / "train.csv", "--events", events,
            "--segment", "city"]
    reports = [report(capsys, tmp_path, *args, "--jobs", jobs)[1] for jobs in (1, 2, 3)]
    for rep in reports:
        del rep["generated_at"]
    assert reports[0]["events"]["read"] == 3000 and reports[0]["sample"]["rows"] == 3000
    assert reports[1] == reports[0] and reports[2] == reports[0]
    code, _, err = report(capsys, tmp_path, *args, "--jobs", 0)
    assert code == 2 and "--jobs: expected at least 1" in err


def test_workers_that_cannot_start_fail_clearly_not_forever(setup, tmp_path):
    """A script read from stdin cannot start 'spawn' workers (they re-import the main
    module): the report says so and what to do, at once, rather than restarting them."""
    root, *_ = setup
    events = split_events(root / "events", tmp_path / "split", 2)
    script = (f"from modelmon.cli import main\nraise SystemExit(main(['report', '--reference', "
              f"{str(root / 'reference.yaml')!r}, '--events', {str(events)!r}, '--jobs', '2', "
              f"'-o', {str(tmp_path / 'out')!r}]))\n")
    run = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "--jobs 2: a worker process died or could not start" in run.stderr and "--jobs 1" in run.stderr


def partial(reference: Reference, area: float, rows: int, group: str, seed: int, size: int = 400) -> Live:
    """A worker's Live: ``rows`` rows of ``group``, area ``area`` + row / 1e6 (to tell rows apart)."""
    live = Live(reference, "city", sample_size=size, max_segments=2, seed=seed, chunk=1000)
    columns = {"area": (area + np.arange(rows) / 1e6).tolist(), "rooms": [3.0] * rows, "city": [group] * rows,
               "price": [300.0] * rows}
    for start in range(0, rows, 1000):
        live.fold({k: v[start:start + 1000] for k, v in columns.items()}, [group] * len(columns["city"][start:start + 1000]))
    live.events = rows
    return live


def test_merged_samples_are_uniform_over_the_union(reference):
    shares = []
    for seed in range(20):
        merged = parallel.merge([partial(reference, 1.0, 3000, "paris", 2 * seed),
                                 partial(reference, 2.0, 1000, "lyon", 2 * seed + 1)], seed=seed)
        area = merged.sample_values("area")
        assert merged.offered == 4000 and len(area) == merged.sampled_rows == 400
        assert len(set(area.tolist())) == 400  # no row twice
        from_first = area[area < 2.0]
        shares.append(len(from_first) / 400)
        # within a part, uniform too: the rows' positions average half the part
        assert abs(np.mean((from_first - 1.0) * 1e6) - 1500) < 300
    # 3000 of 4000 rows: 3/4 of the sample (the mean of 20 hypergeometric shares: sd 0.005)
    assert abs(np.mean(shares) - 0.75) < 0.02 and min(shares) > 0.65 and max(shares) < 0.85
    # counts add, segments by name, each sampled row keeps its segment
    assert merged.counts["area"].sum() == 4000 and merged.segments == ["paris", "lyon"]
    assert merged.group_finite["area"] == [3000, 1000] and merged.segment_rows == [3000, 1000]
    codes = merged.sample_groups[:400]
    assert (area[codes == 0] < 2.0).all() and (area[codes == 1] >= 2.0).all()


def test_merged_segments_keep_the_cap_on_the_totals(reference):
    # max_segments 2: nice is the biggest over both parts though neither part has it first
    parts = [partial(reference, 1.0, 10, "paris", 0), partial(reference, 1.0, 30, "nice", 1),
             partial(reference, 1.0, 20, "lyon", 2), partial(reference, 1.0, 25, "nice", 3)]
    merged = parallel.merge(parts)
    assert merged.segments == ["nice", "lyon", "__other__"] and merged.lumped == 10
    assert merged.segment_rows == [55, 20, 10] and merged.group_counts["city"][0].sum() == 55
    assert merged.sampled_rows == 85 and sorted(np.bincount(merged.sample_groups[:85])) == [10, 20, 55]


def test_progress_only_on_a_terminal(setup, tmp_path, capsys, monkeypatch):
    from modelmon.analysis.event_source import EventStats
    from modelmon.analysis.report import Progress

    root, *_ = setup
    report(capsys, tmp_path, "--reference", root / "reference.yaml", "--events", root / "events")
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    stats = EventStats(bytes_total=1000, bytes_read=250)
    progress = Progress(stats, every=0)
    progress.update(5000)
    progress.close(20000)
    err = capsys.readouterr().err
    assert "5,000 events" in err and "25%" in err and "20,000 events in" in err and err.endswith("\n")


def test_failed_predictions_are_left_out_as_the_metrics_leave_them_out(setup, tmp_path, capsys):
    root, reference, _, live = setup
    log = EventLog(tmp_path / "events")
    monitor = ModelMonitor("house", "1.0", reference, registry=CollectorRegistry(), events=log)
    for i in range(50):
        row = {"area": 1e6, "rooms": 3.0, "city": "paris"}  # far out of range: would drift if counted
        with pytest.raises(RuntimeError), monitor.track(row, prediction_id=f"failed-{i}"):
            raise RuntimeError("model exploded")
    log.close()
    observe(tmp_path / "events", reference, live["1.0"], "1.0")
    _, rep, _ = report(capsys, tmp_path, "--reference", root / "reference.yaml", "--events", tmp_path / "events")
    assert rep["events"]["read"] == 1500 and rep["events"]["failed_left_out"] == 50
    assert column(rep, "area")["n"] == column(rep, "price")["n"] == 1500 and rep["drifting"] == []


def test_redacted_values_are_left_out_and_said_so(setup, tmp_path, capsys):
    root, reference, _, live = setup
    observe(tmp_path / "events", reference, live["1.0"], "1.0", redaction=Redaction(mask={"city"}))
    _, rep, _ = report(capsys, tmp_path, "--reference", root / "reference.yaml", "--events", tmp_path / "events")
    city = column(rep, "city")
    assert city["redacted"] == 1500 and city["n"] == 0 and city["tests"] == []
    assert any("redacted" in note for note in city["notes"]) and not city["drift"]


def test_html_has_one_plot_per_column_and_no_external_asset(setup, tmp_path, capsys):
    root, *_ = setup
    main(["report", "--reference", str(root / "reference.yaml"), "--events", str(root / "events"),
          "-o", str(tmp_path)])  # an existing directory: report.json and report.html inside
    html = (tmp_path / "report.html").read_text()
    assert html.count('<figure class="plot"') == 4 and html.count("<svg") == 4
    assert "<script" not in html and "src=" not in html and "<link" not in html
    rep = json.loads((tmp_path / "report.json").read_text())
    # area, half of it shifted by 0.5 sd, on the reference bins only: binned D 0.105, whose
    # 95% interval (about +/- 0.033 at 3,000 rows) straddles the 0.1 threshold
    assert rep["drifting"] == ["city"] and rep["too_few_to_call"] == ["area"]
    assert column(rep, "area")["verdict"] == "too few rows to call" and "too few rows to call" in html


@pytest.mark.parametrize("args, message", [
    (["--reference", "missing.yaml"], "cannot read reference profile"),
    (["--since", "2999-01-01"], "no prediction events of model 'house' since 2999-01-01"),
    (["--since", "soon"], "--since: expected a duration"),
    (["--training", "missing.csv"], "missing.csv"),
    (["--events", "http://127.0.0.1:9"], "cannot read logs-modelmon.predictions-*: Connection error"),
])
def test_usage_errors_exit_2_with_one_line(setup, tmp_path, capsys, args, message):
    root, *_ = setup
    base = {"--reference": str(root / "reference.yaml"), "--events": str(root / "events")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    code, _, err = report(capsys, tmp_path, *[x for pair in base.items() for x in pair])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_reads_the_same_events_from_elasticsearch(setup, es, elastic, tmp_path, capsys, monkeypatch):
    root, *_ = setup
    shipper = Shipper(es, ShipperConfig(root / "events", namespace=namespace(), state_dir=tmp_path / "state"))
    while shipper.run_once():
        pass
    stream = shipper.config.data_stream
    es.indices.refresh(index=stream)
    args = ["--reference", root / "reference.yaml", "--training", root / "train.csv", "--since", "1h"]
    _, from_file, _ = report(capsys, tmp_path, *args, "--events", root / "events")
    by_jobs = [report(capsys, tmp_path, *args, "--events", elastic.url, "--es-index", stream, "--jobs", jobs)[1]
               for jobs in (1, 2, 3)]
    for rep in (from_file, *by_jobs):
        del rep["generated_at"], rep["events"]["source"]
    assert by_jobs[0] == from_file and by_jobs[0]["events"]["read"] == 3000
    assert by_jobs[1] == by_jobs[0] and by_jobs[2] == by_jobs[0]
    # a worker's exception is raised in the parent with its message
    bad = parallel.Share(None, url=elastic.url, pit="no-such-point-in-time", slice_ids=(0,), slices=2, index=stream)
    reference = Reference.load(root / "reference.yaml")
    with pytest.raises(event_source.SourceError) as alone:
        parallel.fold_share(reference, "modelmon.version", bad, 0, {})
    with pytest.raises(event_source.SourceError) as in_workers:
        parallel.fold_in_processes(reference, "modelmon.version", [bad, bad], {})
    assert str(in_workers.value) == str(alone.value) and f"cannot read {stream}" in str(alone.value)

    # a point in time read in parallel slices, paged with search_after: every event once
    monkeypatch.setattr(event_source, "ES_PAGE", 128)
    for slices in (1, 3):
        stats = event_source.EventStats()
        ids = [e["event.id"] for e in event_source.read_elasticsearch(elastic.url, None, stats, stream, slices)]
        assert len(ids) == len(set(ids)) == stats.read == 3000, slices
    # a generator left early closes its point in time and its threads
    events = event_source.read_elasticsearch(elastic.url, None, event_source.EventStats(), stream, 3)
    next(events)
    events.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("modelmon-es-slice")]
    assert list(event_source.read_elasticsearch(elastic.url, None, event_source.EventStats(),
                                                "logs-modelmon.none-*")) == []
    # only the fields asked for (the report asks for what it reads), dotted names included
    some = event_source.read_elasticsearch(elastic.url, None, event_source.EventStats(), stream,
                                           fields=["modelmon.inputs", "event.id"])
    first = next(some)
    some.close()
    assert set(first) == {"modelmon.inputs", "event.id"} and set(first["modelmon.inputs"]) == {"area", "rooms", "city"}
    # documents with nested objects give the same dotted fields; a refused search reads as Elasticsearch's reason
    nested = f"logs-modelmon.predictions-{namespace()}"
    es.index(index=nested, op_type="create", refresh=True, document={
        "@timestamp": "2026-01-01T00:00:00Z", "event": {"id": "n-1", "outcome": "success"},
        "modelmon": {"model": "house", "inputs": {"area": 50.0, "city": "lyon"}}})
    (event,) = event_source.read_elasticsearch(elastic.url, None, event_source.EventStats(), nested,
                                               fields=["modelmon.inputs", "event.id"])
    assert event["modelmon.inputs"] == {"area": 50.0, "city": "lyon"} and event["event.id"] == "n-1"
    monkeypatch.setattr(event_source, "ES_PAGE", -1)
    with pytest.raises(event_source.SourceError, match=f"cannot read {stream}: .*size"):
        list(event_source.read_elasticsearch(elastic.url, None, event_source.EventStats(), stream, 2))
