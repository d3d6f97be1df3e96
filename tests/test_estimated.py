"""Estimated quality before the labels arrive (issue 15), in process: calibration at profile
time (errors, the YAML round trip, the CLI), the hot path's expected-outcome sums (row and
batch agree, bad probabilities counted, never raised), binary and multiclass."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from modelmon import ModelMonitor, Reference, ReferenceFileError
from modelmon.serving.calibration import MAX_POINTS, fit_map, interpolate
from modelmon.cli import main

FEATURES = [f"x{i}" for i in range(4)]


def classifier(classes: int = 2, seed: int = 0):
    X, y = make_classification(6000, n_features=4, n_informative=3, n_redundant=0, n_classes=classes,
                               n_clusters_per_class=1, random_state=seed)
    model = LogisticRegression(max_iter=500).fit(X[:3000], y[:3000])
    names = np.array(["no", "yes"]) if classes == 2 else np.array([f"c{i}" for i in range(classes)])
    return X, y, model, names


def frames(classes: int = 2):
    X, y, model, names = classifier(classes)
    train = pd.DataFrame(X[:3000], columns=FEATURES)
    train["pred"] = names[model.predict(X[:3000])]
    holdout = pd.DataFrame(X[3000:4500], columns=FEATURES)
    probabilities = [f"p_{n}" for n in names]
    for j, column in enumerate(probabilities):
        holdout[column] = model.predict_proba(X[3000:4500])[:, j]
    holdout["y"] = names[y[3000:4500]]
    return train, holdout, probabilities, (X[4500:], y[4500:], model, names)


def reference(classes: int = 2, **kwargs) -> tuple[Reference, tuple]:
    train, holdout, probabilities, serving = frames(classes)
    ref = Reference.from_data(train, model="m", version="1", prediction="pred", holdout=holdout, target="y",
                              probabilities=probabilities, **kwargs)
    return ref, serving


def samples(registry: CollectorRegistry) -> dict[tuple, float]:
    found = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.startswith("modelmon_estimated") and s.name.endswith("_total"):
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def total(found: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and labels.items() <= dict(ls).items())


def test_binary_reference_stores_the_map_and_the_realized_holdout_metrics(tmp_path):
    ref, _ = reference()
    c = ref.calibration
    assert c.classes == ("no", "yes") and c.positive == "yes" and c.rows == 1500 and c.method == "histogram"
    x, y = c.maps["yes"]
    assert 2 <= len(x) <= MAX_POINTS and list(x) == sorted(x)
    assert set(ref.evaluation) == {"accuracy", "precision", "recall", "f1"}
    assert 0.8 < ref.evaluation["accuracy"] < 1
    ref.save(tmp_path / "ref.yaml")
    loaded = Reference.load(tmp_path / "ref.yaml")
    assert loaded.calibration == c and loaded.hash == ref.hash


def test_a_reference_without_calibration_keeps_its_hash():
    train, *_ = frames()
    ref = Reference.from_data(train, model="m", version="1", prediction="pred")
    assert "calibration" not in ref.to_dict()
    assert Reference.from_dict(ref.to_dict()).hash == ref.hash


@pytest.mark.parametrize("change, message", [
    (lambda h, p: h.assign(**{p[1]: h[p[1]] + 0.1}), "not probabilities summing to 1"),
    (lambda h, p: h.assign(y=np.where(np.arange(len(h)) == 7, "maybe", h["y"])), "labels not among the model's classes"),
    (lambda h, p: h.head(150), "at least 200"),
    (lambda h, p: h.assign(y=np.where(np.arange(len(h)) < 5, "no", "yes")), "at least 10 of each"),
    (lambda h, p: h.drop(columns=[p[0]]), "lacks columns"),
])
def test_bad_holdout_sets_are_clear_errors_at_profile_time(change, message):
    train, holdout, probabilities, _ = frames()
    with pytest.raises(ValueError, match=message):
        Reference.from_data(train, model="m", version="1", prediction="pred", holdout=change(holdout, probabilities),
                            target="y", probabilities=probabilities)


def test_a_holdout_and_an_explicit_accuracy_are_one_too_many():
    train, holdout, probabilities, _ = frames()
    with pytest.raises(ValueError, match="give one or the other"):
        Reference.from_data(train, model="m", version="1", holdout=holdout, target="y", probabilities=probabilities,
                            evaluation={"accuracy": 0.9})


def test_a_tampered_calibration_fails_to_load_naming_the_field():
    ref, _ = reference()
    data = ref.to_dict()
    del data["hash"]
    data["calibration"]["maps"]["yes"]["x"] = [0.5, 0.2]
    data["calibration"]["maps"]["yes"]["y"] = [0.5, 0.2]
    with pytest.raises(ReferenceFileError, match=r"calibration.maps.yes: .*x strictly increasing"):
        Reference.from_dict(data)


def test_the_map_is_bounded_and_calibrates_an_overconfident_model():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 1, 100_000)
    hit = rng.uniform(0, 1, truth.size) < truth
    raw = np.clip(truth + (truth - 0.5) * 0.8, 0, 1)  # over-confident: pushed away from 0.5
    x, y = fit_map(raw, hit)
    assert len(x) <= MAX_POINTS
    for p in (0.1, 0.3, 0.5, 0.7, 0.9):
        expected = 0.5 + (p - 0.5) / 1.8
        assert interpolate(x, y, p) == pytest.approx(expected, abs=0.02)
        assert interpolate(x, y, p) == pytest.approx(float(np.interp(p, x, y)))


def test_rows_and_batches_add_the_same_expected_outcomes():
    ref, (X, y, model, names) = reference()
    P, predicted = model.predict_proba(X), names[model.predict(X)]
    by_row, by_batch = CollectorRegistry(), CollectorRegistry()
    row_monitor = ModelMonitor("m", "1", ref, registry=by_row)
    for i in range(len(X)):
        row_monitor.observe(dict(zip(FEATURES, X[i])), predicted[i], probabilities={"no": P[i, 0], "yes": P[i, 1]})
    batch_monitor = ModelMonitor("m", "1", ref, registry=by_batch)
    half = len(X) // 2
    batch_monitor.observe_batch(pd.DataFrame(X[:half], columns=FEATURES), predicted[:half], probabilities=P[:half])
    batch_monitor.observe_batch(pd.DataFrame(X[half:], columns=FEATURES), predicted[half:],
                                probabilities={"no": P[half:, 0], "yes": P[half:, 1]})
    rows, batches = samples(by_row), samples(by_batch)
    assert rows.keys() == batches.keys()
    for key in rows:
        assert rows[key] == pytest.approx(batches[key], rel=1e-9, abs=1e-9), key
    n = total(rows, "modelmon_estimated_total")
    assert n == len(X)
    cells = {c: total(rows, "modelmon_estimated_confusion_total", cell=c) for c in ("tp", "fp", "fn", "tn")}
    assert sum(cells.values()) == pytest.approx(n)
    assert cells["tp"] + cells["tn"] == pytest.approx(total(rows, "modelmon_estimated_correct_total"))
    estimated = total(rows, "modelmon_estimated_correct_total") / n
    realized = float(np.mean(predicted == names[y]))
    assert abs(estimated - realized) < 0.02  # same distribution as the hold-out set
    stderr = math.sqrt(total(rows, "modelmon_estimated_correct_variance_total")) / n
    assert 0.001 < stderr < 0.02


def test_bad_probabilities_are_counted_never_raised(caplog):
    ref, _ = reference()
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", "1", ref, registry=registry)
    row = dict.fromkeys(FEATURES, 0.0)
    for prediction, probabilities in [
        ("yes", {"no": 0.5, "yes": 0.7}),  # sums to 1.2
        ("yes", {"no": float("nan"), "yes": 1.0}),
        ("yes", {"yes": 1.0}),  # a class missing
        ("yes", "0.9"),
        ("maybe", {"no": 0.5, "yes": 0.5}),  # not a class
        ("yes", [0.2]),
        ("yes", {"no": -0.5, "yes": 1.5}),
    ]:
        monitor.observe(row, prediction, probabilities=probabilities)
    monitor.observe(row, "yes", probabilities=[0.2, 0.8])  # a sequence in class order
    monitor.observe(row, "no", probabilities={"no": 0.6, "yes": 0.4})
    monitor.observe_batch(pd.DataFrame([row] * 3), np.array(["yes", "no", "oops"]),
                          probabilities=np.array([[0.1, 0.9], [0.5, 0.6], [0.5, 0.5]]))
    monitor.observe_batch(pd.DataFrame([row] * 2), np.array(["yes", "no"]), probabilities=np.ones((2, 3)))
    found = samples(registry)
    assert total(found, "modelmon_estimated_invalid_total") == 7 + 2 + 2
    assert total(found, "modelmon_estimated_total") == 3


def test_probabilities_without_a_calibration_count_an_input_error():
    train, *_ = frames()
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", "1", Reference.from_data(train, model="m", version="1", prediction="pred"),
                           registry=registry)
    monitor.observe(dict.fromkeys(FEATURES, 0.0), "yes", probabilities={"no": 0.2, "yes": 0.8})
    assert registry.get_sample_value("modelmon_internal_errors_total", {"stage": "input"}) == 1
    assert not [k for k in samples(registry) if k[0] == "modelmon_estimated_total"]


def test_multiclass_expected_confusion_by_class():
    ref, (X, y, model, names) = reference(classes=3)
    assert ref.calibration.positive is None and set(ref.calibration.maps) == set(names)
    assert set(ref.evaluation) == {"accuracy"}
    P, predicted = model.predict_proba(X), names[model.predict(X)]
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", "1", ref, registry=registry)
    for i in range(200):
        monitor.observe(dict(zip(FEATURES, X[i])), predicted[i], probabilities=dict(zip(names, P[i])))
    monitor.observe_batch(pd.DataFrame(X[200:], columns=FEATURES), predicted[200:], probabilities=P[200:])
    found = samples(registry)
    n = total(found, "modelmon_estimated_total")
    assert n == len(X)
    confusion = {(p, a): total(found, "modelmon_estimated_class_confusion_total", predicted=p, actual=a)
                 for p in names for a in names}
    assert len(confusion) == 9 and sum(confusion.values()) == pytest.approx(n)
    for p in names:  # rows predicted p, whatever their class
        assert sum(confusion[p, a] for a in names) == pytest.approx(float(np.sum(predicted == p)))
    diagonal = sum(confusion[c, c] for c in names)
    assert diagonal == pytest.approx(total(found, "modelmon_estimated_correct_total"))
    assert abs(diagonal / n - float(np.mean(predicted == names[y]))) < 0.03


def test_profile_command_calibrates_on_a_holdout_csv(tmp_path, capsys):
    train, holdout, probabilities, _ = frames()
    train.to_csv(tmp_path / "train.csv", index=False)
    holdout.to_csv(tmp_path / "holdout.csv", index=False)
    argv = ["profile", str(tmp_path / "train.csv"), "--model", "m", "--version", "1", "--prediction", "pred",
            "--holdout", str(tmp_path / "holdout.csv"), "--target", "y", "--probabilities", ",".join(probabilities),
            "-o", str(tmp_path / "ref.yaml")]
    assert main(argv) == 0
    assert "calibrated on 1500 hold-out rows, classes ['no', 'yes']" in capsys.readouterr().out
    ref = Reference.load(tmp_path / "ref.yaml")
    assert ref.calibration.positive == "yes" and ref.evaluation["accuracy"] > 0.8
    holdout.assign(p_yes=holdout["p_yes"] * 2).to_csv(tmp_path / "bad.csv", index=False)
    assert main(argv[:9] + [str(tmp_path / "bad.csv")] + argv[10:]) == 2
    assert "not probabilities summing to 1" in capsys.readouterr().err
    assert main(argv[:8] + ["--target", "y", "-o", str(tmp_path / "x.yaml")]) == 2
    assert "on a --holdout set" in capsys.readouterr().err
