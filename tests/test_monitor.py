"""ModelMonitor: the contract on the wire, bulk folding, bad input, several models."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from modelmon import CONTRACT, ModelMonitor, Reference
from modelmon.serving.metrics import NEGATIVE, POSITIVE, SIGN, SIGNS
from conftest import scrape, total, value

M = dict(model="house", version="1.0")
P = {**M, SIGN: POSITIVE}  # values >= 0
N = {**M, SIGN: NEGATIVE}  # values < 0, summed as magnitudes
ROW = {"area": 100.0, "rooms": 3.0, "city": "paris"}


def test_a_scrape_right_after_observe_sees_the_values(monitor, registry):
    monitor.observe(ROW, 310.0)
    samples = scrape(registry)
    assert value(samples, "modelmon_predictions_total", **M) == 1
    assert total(samples, "modelmon_feature_bin_total", feature="area", **M) == 1
    assert value(samples, "modelmon_feature_bin_total", feature="city", bin="paris", **M) == 1
    assert value(samples, "modelmon_feature_value_sum", feature="area", **P) == 100.0
    assert value(samples, "modelmon_feature_value_count", feature="area", **P) == 1
    assert value(samples, "modelmon_feature_value_count", feature="area", **N) == 0
    assert total(samples, "modelmon_prediction_bin_total", output="price", **M) == 1
    assert value(samples, "modelmon_prediction_value_sum", output="price", **P) == 310.0
    monitor.observe(ROW, 290.0)
    again = scrape(registry)
    assert value(again, "modelmon_predictions_total", **M) == 2
    assert value(again, "modelmon_prediction_value_sum", output="price", **P) == 600.0


def test_every_contract_family_but_outcomes_and_http_is_exported(monitor, registry):
    monitor.observe(ROW, 310.0)
    with pytest.raises(ZeroDivisionError), monitor.track():
        1 / 0
    names = {name for name, _ in scrape(registry)}
    reserved = {"modelmon_http", "modelmon_outcome", "modelmon_reference_score", "modelmon_alert_threshold",
                "modelmon_internal_errors", "modelmon_feature_tokens", "modelmon_feature_unknown_tokens",
                "modelmon_reference_unknown_token_ratio",
                "modelmon_estimated"}  # outcomes, HTTP, text, estimated quality (test_estimated.py): on their own
    for spec in CONTRACT:
        if not spec.name.startswith(tuple(reserved)):
            assert set(spec.samples) <= names, spec.name


def test_every_bin_exists_at_zero_before_traffic(monitor, registry, reference):
    samples = scrape(registry)
    for feature, profile in reference.features.items():
        for label in profile.bin_labels:
            assert value(samples, "modelmon_feature_bin_total", feature=feature, bin=label, **M) == 0
            assert value(samples, "modelmon_reference_bin_ratio", feature=feature, bin=label, **M) == \
                pytest.approx(profile.shares[label])
    assert value(samples, "modelmon_predictions_total", **M) == 0


def test_constants_describe_model_reference_and_dependencies(monitor, registry, reference):
    samples = scrape(registry)
    assert value(samples, "modelmon_model_info", reference=reference.hash, **M) == 1
    assert value(samples, "modelmon_model_trained_timestamp_seconds", **M) == reference.trained_at.timestamp()
    assert time.time() - value(samples, "modelmon_model_loaded_timestamp_seconds", **M) < 60
    assert value(samples, "modelmon_dependency_info", package="numpy", version=np.__version__) == 1
    area = reference.features["area"]
    assert value(samples, "modelmon_reference_mean", feature="area", **M) == pytest.approx(area.mean)
    assert value(samples, "modelmon_reference_stddev", feature="area", **M) == pytest.approx(area.stddev)
    assert value(samples, "modelmon_reference_prediction_mean", output="price", **M) == \
        pytest.approx(reference.outputs["price"].mean)
    assert not any(n == "modelmon_reference_mean" and ("feature", "city") in lbl for n, lbl in samples)


def test_reference_loads_from_a_path(reference, tmp_path, registry):
    path = tmp_path / "reference.yaml"
    reference.save(path)
    ModelMonitor("house", "1.0", str(path), registry=registry).observe(ROW, 300.0)
    assert value(scrape(registry), "modelmon_predictions_total", **M) == 1


BAD_ROWS = [
    ({"area": None, "rooms": 3.0, "city": "paris"}, "area", "__missing__"),
    ({"rooms": 3.0, "city": "paris"}, "area", "__missing__"),
    ({"area": math.nan, "rooms": 3.0, "city": "paris"}, "area", "__missing__"),
    ({"area": math.inf, "rooms": 3.0, "city": "paris"}, "area", "__invalid__"),
    ({"area": "big", "rooms": 3.0, "city": "paris"}, "area", "__invalid__"),
    ({"area": {"nested": 1}, "rooms": 3.0, "city": "paris"}, "area", "__invalid__"),
    ({"area": 1e9, "rooms": 3.0, "city": "paris"}, "area", "__above__"),
    ({"area": -1e9, "rooms": 3.0, "city": "paris"}, "area", "__below__"),
    ({"area": 100.0, "rooms": 3.0, "city": "x" * 100_000}, "city", "__unseen__"),
    ({"area": 100.0, "rooms": 3.0, "city": 4.5}, "city", "__invalid__"),
    ({"area": 100.0, "rooms": 3.0, "city": None}, "city", "__missing__"),
]


@pytest.mark.parametrize("row, feature, expected", BAD_ROWS)
def test_bad_feature_values_are_counted_in_their_bin_not_raised(monitor, registry, row, feature, expected):
    monitor.observe(row, 300.0)
    samples = scrape(registry)
    assert value(samples, "modelmon_feature_bin_total", feature=feature, bin=expected, **M) == 1
    assert total(samples, "modelmon_internal_errors_total") == 0


@pytest.mark.parametrize(
    "prediction, expected",
    [(math.nan, "__missing__"), (None, "__missing__"), (math.inf, "__invalid__"), ([1.0, 2.0], "__invalid__"),
     ("cheap", "__invalid__"), (np.float32(300), None)],
)
def test_bad_predictions_are_counted_in_their_bin(monitor, registry, prediction, expected):
    monitor.observe(ROW, prediction)
    samples = scrape(registry)
    if expected is None:
        assert value(samples, "modelmon_prediction_value_count", output="price", **P) == 1
    else:
        assert value(samples, "modelmon_prediction_bin_total", output="price", bin=expected, **M) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.observe(None, 1.0),
        lambda m: m.observe([1, 2, 3], 1.0),
        lambda m: m.observe("row", 1.0),
        lambda m: m.observe({**ROW, "surprise": 1, "another": 2}, 300.0),
        lambda m: m.observe(ROW, {"price": 1.0, "other": 2.0}),
        lambda m: m.observe_batch({"area": np.ones(3)}, np.ones(4).reshape(2, 2)[0][:1].tolist() + [1, 2, 3]),
        lambda m: m.observe_batch({"area": np.ones(3)}, 5.0),
        lambda m: m.observe_batch([1, 2], np.ones(2)),
        lambda m: m.observe_batch({"area": np.ones(3)}, {"price": np.ones(3), "bogus": np.ones(2)}),
    ],
)
def test_unusable_input_is_counted_as_an_input_error_never_raised(monitor, registry, call):
    call(monitor)
    samples = scrape(registry)
    assert value(samples, "modelmon_internal_errors_total", stage="input") >= 1
    assert not any(("feature", "surprise") in labels for _, labels in samples)


def test_unknown_features_and_categories_do_not_grow_series(monitor, registry):
    before = len(scrape(registry))
    for i in range(2000):
        monitor.observe({**ROW, "city": f"city-{i}", f"new-{i}": i}, 300.0)
    samples = scrape(registry)
    assert len(samples) == before
    assert value(samples, "modelmon_feature_bin_total", feature="city", bin="__unseen__", **M) == 2000
    assert value(samples, "modelmon_internal_errors_total", stage="input") == 2000


def test_batch_counts_equal_row_by_row_counts(reference):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "area": np.where(rng.random(500) < 0.1, np.nan, rng.normal(120, 30, 500)),
        "rooms": rng.integers(0, 10, 500).astype(float),
        "city": rng.choice(np.array(["paris", "lyon", "oslo", None], dtype=object), 500),
    })
    preds = rng.normal(300, 80, 500)
    by_row, by_batch = CollectorRegistry(), CollectorRegistry()
    row_monitor = ModelMonitor("house", "1.0", reference, registry=by_row)
    for record, p in zip(frame.to_dict("records"), preds):
        row_monitor.observe(record, float(p))
    ModelMonitor("house", "1.0", reference, registry=by_batch).observe_batch(frame, preds)
    rows, batch = scrape(by_row), scrape(by_batch)
    for key, v in rows.items():
        if key[0].endswith(("_total", "_sum", "_count")) and not key[0].startswith("modelmon_prediction_duration"):
            assert batch[key] == pytest.approx(v), key


def test_batch_with_an_absent_column_counts_it_missing(monitor, registry):
    monitor.observe_batch({"area": np.array([90.0, 110.0]), "city": ["paris", "lyon"]}, np.array([1.0, 2.0]))
    samples = scrape(registry)
    assert value(samples, "modelmon_feature_bin_total", feature="rooms", bin="__missing__", **M) == 2
    assert value(samples, "modelmon_predictions_total", **M) == 2


def test_batch_column_of_the_wrong_length_is_skipped_and_counted(monitor, registry):
    monitor.observe_batch({"area": np.ones(5), "rooms": np.ones(3), "city": ["paris"] * 3}, np.ones(3))
    samples = scrape(registry)
    assert total(samples, "modelmon_feature_bin_total", feature="area", **M) == 0
    assert total(samples, "modelmon_feature_bin_total", feature="rooms", **M) == 3
    assert value(samples, "modelmon_internal_errors_total", stage="input") == 1


def test_track_times_calls_and_counts_errors_by_class(monitor, registry):
    with monitor.track() as tracked:
        time.sleep(0.01)
        tracked.observe(ROW, 300.0)
    for exc in (ValueError, KeyError, ValueError):
        with pytest.raises(exc), monitor.track():
            raise exc("boom")
    samples = scrape(registry)
    assert value(samples, "modelmon_prediction_duration_seconds_count", **M) == 4
    assert value(samples, "modelmon_prediction_duration_seconds_sum", **M) >= 0.01
    assert value(samples, "modelmon_prediction_errors_total", error="ValueError", **M) == 2
    assert value(samples, "modelmon_prediction_errors_total", error="KeyError", **M) == 1
    assert value(samples, "modelmon_predictions_total", **M) == 1


def test_error_labels_are_bounded(monitor, registry):
    for i in range(50):
        with pytest.raises(Exception), monitor.track():
            raise type(f"Error{i}", (Exception,), {})()
    errors = {dict(lbl)["error"] for n, lbl in scrape(registry) if n == "modelmon_prediction_errors_total"}
    assert len(errors) == 21 and "other" in errors


def test_instrument_records_rows_and_batches(monitor, registry):
    @monitor.instrument
    def predict(features):
        return features["area"] * 3

    @monitor.instrument(batch=True)
    def predict_batch(frame):
        return frame["area"] * 3

    assert predict(ROW) == 300.0
    assert list(predict_batch(pd.DataFrame([ROW, ROW]))) == [300.0, 300.0]
    samples = scrape(registry)
    assert value(samples, "modelmon_predictions_total", **M) == 3
    assert value(samples, "modelmon_prediction_value_sum", output="price", **P) == 900.0
    assert value(samples, "modelmon_prediction_duration_seconds_count", **M) == 2


def test_two_models_share_one_registry(reference, registry):
    other = Reference.from_data({"x": np.arange(100.0), "y": np.arange(100.0) % 2}, model="clf", version="2",
                                prediction="y", categorical=["y"])
    house = ModelMonitor("house", "1.0", reference, registry=registry)
    clf = ModelMonitor("clf", "2", other, registry=registry)
    house.observe(ROW, 300.0)
    clf.observe({"x": 5.0}, 1)
    clf.observe({"x": 6.0}, "0")
    samples = scrape(registry)
    assert value(samples, "modelmon_predictions_total", **M) == 1
    assert value(samples, "modelmon_predictions_total", model="clf", version="2") == 2
    assert value(samples, "modelmon_prediction_bin_total", model="clf", version="2", output="y", bin="1") == 1
    assert value(samples, "modelmon_prediction_bin_total", model="clf", version="2", output="y", bin="0") == 1


def test_two_versions_of_one_model_side_by_side(reference, registry):
    ModelMonitor("house", "1.0", reference, registry=registry).observe(ROW, 1.0)
    ModelMonitor("house", "1.1", reference, registry=registry).observe(ROW, 1.0)
    samples = scrape(registry)
    assert total(samples, "modelmon_predictions_total", model="house") == 2


def test_same_model_and_version_twice_is_a_configuration_error(monitor, reference, registry):
    with pytest.raises(ValueError, match="exists in this registry"):
        ModelMonitor("house", "1.0", reference, registry=registry)


def test_thresholds_are_exported_and_validated(reference, registry):
    ModelMonitor("house", "1.0", reference, registry=registry, thresholds={"ModelmonFeatureDrift": 0.3})
    assert value(scrape(registry), "modelmon_alert_threshold", alert="ModelmonFeatureDrift", **M) == 0.3
    with pytest.raises(ValueError, match="unknown alerts"):
        ModelMonitor("house", "2.0", reference, registry=registry, thresholds={"ModelmonTypo": 1})


def test_a_failing_flush_is_counted_not_raised(monitor, registry):
    monitor.observe(ROW, 300.0)
    # prometheus-client cannot be made to fail for real: break the monitor's children instead
    monitor._bin_children = [None] * len(monitor._bin_children)
    monitor.observe(ROW, 300.0)
    samples = scrape(registry)
    assert value(samples, "modelmon_internal_errors_total", stage="flush") >= 1


def test_concurrent_observers_lose_nothing(monitor, registry):
    import threading

    def work():
        for _ in range(2000):
            monitor.observe(ROW, 300.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        scrape(registry)
    for t in threads:
        t.join()
    samples = scrape(registry)
    assert value(samples, "modelmon_predictions_total", **M) == 8000
    assert value(samples, "modelmon_feature_bin_total", feature="city", bin="paris", **M) == 8000
    assert value(samples, "modelmon_feature_value_sum", feature="area", **P) == 800_000.0


def test_text_features_count_length_bins_and_unknown_tokens(registry):
    texts = np.array(["a cosy flat near the park", "big house", "big house with a garden"] * 10, dtype=object)
    ref = Reference.from_data({"description": texts}, model="m", version="1", text=["description"])
    monitor = ModelMonitor("m", "1", ref, registry=registry)
    monitor.observe({"description": "Big garden, huge pool"}, None)  # 4 tokens, 2 unknown
    monitor.observe({"description": 42}, None)
    monitor.observe_batch({"description": ["big flat", None]}, np.zeros(2))
    samples = scrape(registry)
    labels = dict(model="m", version="1", feature="description")
    assert value(samples, "modelmon_feature_tokens_total", **labels) == 6
    assert value(samples, "modelmon_feature_unknown_tokens_total", **labels) == 2
    assert value(samples, "modelmon_reference_unknown_token_ratio", **labels) == 0.0
    assert value(samples, "modelmon_feature_bin_total", bin="__invalid__", **labels) == 1
    assert value(samples, "modelmon_feature_bin_total", bin="__missing__", **labels) == 1
    assert total(samples, "modelmon_feature_bin_total", **labels) == 4
    assert value(samples, "modelmon_feature_value_sum", sign=POSITIVE, **labels) == 6  # token counts: mean length
    assert value(samples, "modelmon_feature_value_count", sign=NEGATIVE, **labels) == 0  # there for uniformity


def signed(samples: dict, metric: str, **labels) -> dict[str, tuple[float, float]]:
    """(count, sum) of a value summary by sign."""
    return {sign: (value(samples, f"{metric}_count", sign=sign, **labels),
                   value(samples, f"{metric}_sum", sign=sign, **labels)) for sign in SIGNS}


def test_both_signs_exist_from_the_first_scrape(monitor, registry):
    samples = scrape(registry)
    for metric, labels in (("modelmon_feature_value", dict(feature="area")),
                           ("modelmon_feature_value", dict(feature="rooms")),
                           ("modelmon_prediction_value", dict(output="price"))):
        assert signed(samples, metric, **labels, **M) == {POSITIVE: (0, 0), NEGATIVE: (0, 0)}
    assert not [k for k in samples if k[0] == "modelmon_feature_value_count" and dict(k[1])["feature"] == "city"]


NEGATIVE_ROWS = [(-5.0, -0.0, -310.0), (7.0, 0.0, 2.5), (-0.5, -3.0, 0.0), (2.0, 1.0, -1.5)]  # area, rooms, price


def expected_signed(values) -> dict[str, tuple[float, float]]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {POSITIVE: (sum(v >= 0 for v in finite), sum(v for v in finite if v >= 0)),
            NEGATIVE: (sum(v < 0 for v in finite), sum(-v for v in finite if v < 0))}


def test_negative_values_count_by_sign_and_sum_as_magnitudes(monitor, registry):
    for area, rooms, price in NEGATIVE_ROWS:
        monitor.observe({"area": area, "rooms": rooms, "city": "paris"}, price)
    samples = scrape(registry)
    assert signed(samples, "modelmon_feature_value", feature="area", **M) == {POSITIVE: (2, 9.0), NEGATIVE: (2, 5.5)}
    # zero is positive, -0.0 too
    assert signed(samples, "modelmon_feature_value", feature="rooms", **M) == {POSITIVE: (3, 1.0), NEGATIVE: (1, 3.0)}
    assert signed(samples, "modelmon_prediction_value", output="price", **M) == {
        POSITIVE: (2, 2.5), NEGATIVE: (2, 311.5)}


@pytest.mark.parametrize("rows", [4, 40_000])  # searched, and compared edge by edge (long columns)
def test_batches_of_mixed_signs_count_like_single_rows(reference, rows):
    rng = np.random.default_rng(3)
    area = np.concatenate([[0.0, -0.0, np.nan, -np.inf, np.inf], rng.normal(-50.0, 5.0, rows),
                           rng.normal(0.0, 1.0, rows), rng.normal(100.0, 20.0, rows)])
    rooms = np.round(rng.normal(0.0, 3.0, len(area)))
    price = rng.normal(0.0, 1.0, len(area))
    batch, single = CollectorRegistry(), CollectorRegistry()
    ModelMonitor("house", "1.0", reference, registry=batch).observe_batch(
        {"area": area, "rooms": pd.Series(rooms), "city": ["paris"] * len(area)}, price)
    one = ModelMonitor("house", "1.0", reference, registry=single)
    for a, r, p in zip(area.tolist(), rooms.tolist(), price.tolist()):
        one.observe({"area": a, "rooms": r, "city": "paris"}, p)
    by_batch, by_row = scrape(batch), scrape(single)
    for metric, labels, values in (("modelmon_feature_value", dict(feature="area"), area),
                                   ("modelmon_feature_value", dict(feature="rooms"), rooms),
                                   ("modelmon_prediction_value", dict(output="price"), price)):
        want = expected_signed(values.tolist())
        for got in (signed(by_batch, metric, **labels, **M), signed(by_row, metric, **labels, **M)):
            assert {s: c for s, (c, _) in got.items()} == {s: c for s, (c, _) in want.items()}
            assert {s: v for s, (_, v) in got.items()} == pytest.approx({s: v for s, (_, v) in want.items()})
    mean = (value(by_batch, "modelmon_feature_value_sum", feature="area", **P)
            - value(by_batch, "modelmon_feature_value_sum", feature="area", **N)) / total(
        by_batch, "modelmon_feature_value_count", feature="area", **M)
    assert mean == pytest.approx(np.mean(area[np.isfinite(area)]))


def test_signed_sums_never_decrease_across_scrapes(monitor, registry):
    seen = []
    for area, rooms, price in NEGATIVE_ROWS * 3:
        monitor.observe({"area": area, "rooms": rooms, "city": "paris"}, price)
        monitor.observe_batch({"area": np.array([area, -area]), "rooms": [rooms, rooms]}, np.array([price, -price]))
        seen.append(scrape(registry))
    for name, labels in {k for k in seen[0] if "_value_" in k[0] and not k[0].endswith("_created")}:
        key = (name, labels)
        assert all(a[key] <= b[key] for a, b in zip(seen, seen[1:])), key
