"""Delayed labels: joined to their prediction, counted, bounded."""
from __future__ import annotations

import time

import numpy as np
import pytest

from modelmon import ModelMonitor, Reference
from modelmon.serving.outcomes import OutcomeStore
from conftest import scrape, total, value

M = dict(model="house", version="1.0")
ROW = {"area": 100.0, "rooms": 3.0, "city": "paris"}


@pytest.fixture
def store(tmp_path) -> OutcomeStore:
    return OutcomeStore(tmp_path / "outcomes.sqlite")


def test_regression_labels_give_absolute_and_squared_errors(reference, registry, store):
    monitor = ModelMonitor("house", "1.0", reference, registry=registry, outcomes=store)
    for i, prediction in enumerate([300.0, 310.0, 320.0]):
        monitor.observe(ROW, prediction, prediction_id=f"p{i}")
    assert monitor.record_outcome("p0", 290.0) and monitor.record_outcome("p2", 340.0)
    samples = scrape(registry)
    assert value(samples, "modelmon_outcomes_total", **M) == 2
    assert value(samples, "modelmon_outcome_absolute_error_sum", **M) == 30.0
    assert value(samples, "modelmon_outcome_squared_error_sum", **M) == 500.0
    assert len(store) == 1  # p1 still waits for its label


def test_classifier_labels_count_correct_predictions(registry, store):
    data = {"x": np.arange(200.0), "label": np.where(np.arange(200) % 3 == 0, "yes", "no").astype(object)}
    ref = Reference.from_data(data, model="churn", version="2", prediction="label", evaluation={"accuracy": 0.9})
    monitor = ModelMonitor("churn", "2", ref, registry=registry, outcomes=store)
    monitor.observe_batch({"x": np.arange(4.0)}, np.array(["yes", "no", "yes", "no"], dtype=object),
                          prediction_ids=["a", "b", "c", "d"])
    results = [monitor.record_outcome(i, actual) for i, actual in zip("abcd", ["yes", "yes", "yes", "no"])]
    samples = scrape(registry)
    labels = dict(model="churn", version="2")
    assert results == [True] * 4
    assert value(samples, "modelmon_outcomes_total", **labels) == 4
    assert value(samples, "modelmon_outcomes_correct_total", **labels) == 3
    assert value(samples, "modelmon_reference_score", metric="accuracy", **labels) == 0.9


def test_unknown_repeated_and_unusable_labels_are_counted_unmatched(monitor, registry):
    monitor.observe(ROW, 300.0, prediction_id="p1")
    monitor.observe(ROW, 300.0, prediction_id="p2")
    assert not monitor.record_outcome("never-seen", 1.0)
    assert monitor.record_outcome("p1", 305.0)
    assert not monitor.record_outcome("p1", 305.0)  # a label joins once
    assert not monitor.record_outcome("p2", "expensive")
    samples = scrape(registry)
    assert value(samples, "modelmon_outcomes_unmatched_total", reason="unknown_id", **M) == 2
    assert value(samples, "modelmon_outcomes_unmatched_total", reason="invalid", **M) == 1
    assert value(samples, "modelmon_outcomes_total", **M) == 1


def test_a_label_is_counted_under_the_version_that_predicted(reference, registry, store):
    old = ModelMonitor("house", "1.0", reference, registry=registry, outcomes=store)
    new = ModelMonitor("house", "1.1", reference, registry=registry, outcomes=store)
    old.observe(ROW, 300.0, prediction_id="p")
    assert new.record_outcome("p", 310.0)
    samples = scrape(registry)
    assert value(samples, "modelmon_outcomes_total", **M) == 1
    assert total(samples, "modelmon_outcomes_total", version="1.1") == 0


def test_predictions_expire_after_the_ttl_and_are_counted(reference, registry, tmp_path):
    store = OutcomeStore(tmp_path / "o.sqlite", ttl_seconds=60)
    monitor = ModelMonitor("house", "1.0", reference, registry=registry, outcomes=store)
    monitor.observe(ROW, 300.0, prediction_id="old")
    monitor.flush()
    store.expire(time.time() + 120, force=True)
    assert store.take_dropped() == {("house", "1.0"): 1} and len(store) == 0
    assert not monitor.record_outcome("old", 300.0)


def test_the_store_keeps_at_most_max_rows(tmp_path):
    store = OutcomeStore(tmp_path / "o.sqlite", max_rows=1000)
    now = time.time()
    store.put(("m", f"id{i}", "1", float(i), now + i) for i in range(5000))
    assert store.take_dropped() == {("m", "1"): 4000}
    assert len(store) == 1000 and store.take("m", "id4999") == ("1", 4999.0)
    assert store.take("m", "id0") is None  # the oldest went first


def test_the_default_store_stays_bounded_and_counts_what_it_drops(reference, registry):
    store = OutcomeStore(max_rows=500)
    monitor = ModelMonitor("house", "1.0", reference, registry=registry, outcomes=store)
    for i in range(3000):
        monitor.observe(ROW, 300.0, prediction_id=f"p{i}")
    samples = scrape(registry)
    assert len(store) == 500
    assert value(samples, "modelmon_outcomes_unmatched_total", reason="expired", **M) == 2500
    assert monitor.record_outcome("p2999", 300.0) and not monitor.record_outcome("p0", 300.0)


def test_the_hot_path_leaves_writing_to_a_background_thread(reference, registry, store):
    monitor = ModelMonitor("house", "1.0", reference, registry=registry, outcomes=store)
    monitor.observe(ROW, 300.0, prediction_id="p")
    assert len(store) == 0  # queued, not yet written
    deadline = time.monotonic() + 5
    while len(store) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(store) == 1


def test_a_label_finds_its_prediction_deep_in_the_write_queue(tmp_path):
    """The queue is written WRITE_CHUNK rows per transaction; a label waits for all of it."""
    store = OutcomeStore(tmp_path / "o.sqlite")
    now = time.time()
    for i in range(2 * OutcomeStore.WRITE_CHUNK + 10):
        store.remember(("m", f"id{i}", "1", float(i), now))
    assert store.take("m", f"id{2 * OutcomeStore.WRITE_CHUNK + 9}") == ("1", float(2 * OutcomeStore.WRITE_CHUNK + 9))
    assert len(store) == 2 * OutcomeStore.WRITE_CHUNK + 9


def test_bad_store_settings_fail_at_start_up(tmp_path):
    with pytest.raises(ValueError, match="ttl_seconds"):
        OutcomeStore(ttl_seconds=0)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OSError):
        OutcomeStore(tmp_path / "file" / "o.sqlite")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))


def test_a_million_outstanding_predictions_keep_memory_bounded(reference, registry, store):
    monitor = ModelMonitor("house", "1.0", reference, registry=registry, outcomes=store)
    frame = {"area": np.full(10_000, 100.0), "rooms": np.full(10_000, 2.0), "city": ["paris"] * 10_000}
    predictions = np.full(10_000, 300.0)
    monitor.observe_batch(frame, predictions, prediction_ids=[f"warm{i}" for i in range(10_000)])
    monitor.flush()
    before = rss_bytes()
    for batch in range(100):
        monitor.observe_batch(frame, predictions, prediction_ids=[f"b{batch}-{i}" for i in range(10_000)])
    monitor.flush()
    grown = rss_bytes() - before
    assert len(store) == 1_010_000
    assert grown < 60 * 1024 * 1024, f"memory grew by {grown / 2**20:.0f} MiB"
    assert monitor.record_outcome("b99-9999", 300.0) and monitor.record_outcome("b0-0", 300.0)
