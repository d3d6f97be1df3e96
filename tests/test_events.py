"""Prediction events: ECS JSON lines, flags, sampling, redaction, bounded files."""
from __future__ import annotations

import json
import math
import multiprocessing
import os

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from modelmon import ModelMonitor
from modelmon.pipeline.events import EventLog, Redaction
from conftest import scrape, value

ROW = {"area": 100.0, "rooms": 3.0, "city": "paris"}


def read_events(directory) -> list[dict]:
    def reject(constant):
        raise ValueError(f"not valid JSON for Elasticsearch: {constant}")

    lines = []
    for path in sorted(directory.glob("predictions-*.jsonl*")):
        lines += [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]
    return lines


@pytest.fixture
def events_monitor(reference, registry, tmp_path):
    def make(**options):
        log = EventLog(tmp_path / "events", **options)
        return ModelMonitor("house", "1.0", reference, registry=registry, events=log), tmp_path / "events"
    return make


def test_an_event_has_ecs_and_modelmon_fields(events_monitor, reference):
    monitor, directory = events_monitor(labels={"region": "eu"})
    monitor.observe(ROW, 310.0, prediction_id="p-1", trace_id="t-9", duration=0.012)
    (event,) = read_events(directory)
    assert (directory / f"predictions-{os.getpid()}.jsonl").exists()
    assert event["@timestamp"].startswith("20") and event["log.level"] == "info"
    assert event["service.name"] == "house" and event["service.version"] == "1.0"
    assert event["event.kind"] == "event" and event["event.dataset"] == "modelmon.predictions"
    assert event["event.id"] == "p-1" and event["trace.id"] == "t-9" and event["event.outcome"] == "success"
    assert event["event.duration"] == 12_000_000
    assert event["modelmon.inputs"] == ROW and event["modelmon.outputs"] == {"price": 310.0}
    assert event["modelmon.prediction.value"] == 310.0
    assert event["modelmon.reference"] == reference.hash
    assert event["modelmon.anomalous"] is False and event["modelmon.flags.missing"] == []
    assert event["labels"] == {"region": "eu"}


def test_flags_name_the_features_of_each_problem(events_monitor):
    monitor, directory = events_monitor()
    monitor.observe({"area": 1e9, "rooms": None, "city": "oslo"}, math.nan)
    monitor.observe({"area": "big", "city": "paris"}, math.inf)
    first, second = read_events(directory)
    assert first["modelmon.flags.out_of_range"] == ["area"]
    assert first["modelmon.flags.missing"] == ["rooms"] and first["modelmon.flags.unseen"] == ["city"]
    assert first["modelmon.flags.nonfinite_prediction"] is True and first["modelmon.anomalous"] is True
    assert first["modelmon.outputs"] == {"price": "nan"} and "modelmon.prediction.value" not in first
    assert second["modelmon.flags.invalid"] == ["area"] and second["modelmon.flags.missing"] == ["rooms"]
    assert len({first["event.id"], second["event.id"]}) == 2


def test_sampling_keeps_every_anomaly_and_error(events_monitor):
    monitor, directory = events_monitor(sample_rate=0.0)
    for _ in range(50):
        monitor.observe(ROW, 300.0)
    monitor.observe({**ROW, "city": "oslo"}, 300.0, prediction_id="odd")
    with pytest.raises(RuntimeError), monitor.track(ROW, prediction_id="boom"):
        raise RuntimeError("model exploded")
    events = read_events(directory)
    assert [e["event.id"] for e in events] == ["odd", "boom"]
    error = events[1]
    assert error["log.level"] == "error" and error["event.outcome"] == "failure"
    assert error["error.type"] == "RuntimeError" and error["error.message"] == "model exploded"
    assert error["modelmon.inputs"] == ROW


def test_sample_rate_keeps_about_that_share(events_monitor):
    monitor, directory = events_monitor(sample_rate=0.2)
    for _ in range(2000):
        monitor.observe(ROW, 300.0)
    assert 300 <= len(read_events(directory)) <= 500


def test_redaction_drops_hashes_masks_and_truncates(events_monitor):
    redaction = Redaction(drop={"rooms"}, hash={"city"}, mask={"area"}, key=b"secret", max_length=8)
    monitor, directory = events_monitor(redaction=redaction)
    monitor.observe(ROW, 300.0)
    monitor.observe({**ROW, "note": "x" * 10_000}, 300.0)
    first, second = read_events(directory)
    assert "rooms" not in first["modelmon.inputs"]
    assert first["modelmon.inputs"]["area"] == "****"
    assert first["modelmon.inputs"]["city"].startswith("hmac:") and "paris" not in json.dumps(first)
    assert second["modelmon.inputs"]["city"] == first["modelmon.inputs"]["city"]  # keyed hash: joinable
    assert second["modelmon.inputs"]["note"] == "x" * 8


def test_hashing_without_a_key_is_a_configuration_error(monkeypatch):
    monkeypatch.delenv("MODELMON_REDACTION_KEY", raising=False)
    with pytest.raises(ValueError, match="needs a key"):
        Redaction(hash={"email"})
    monkeypatch.setenv("MODELMON_REDACTION_KEY", "k")
    assert Redaction(hash={"email"}).key == b"k"


def test_files_rotate_and_stay_bounded(events_monitor):
    monitor, directory = events_monitor(max_bytes=4096, backup_count=2)
    for i in range(500):
        monitor.observe(ROW, 300.0, prediction_id=str(i))
    files = list(directory.iterdir())
    assert len(files) == 3
    assert all(f.stat().st_size <= 4096 for f in files)
    ids = [int(e["event.id"]) for e in read_events(directory)]
    assert max(ids) == 499 and len(ids) < 500


def test_a_reopened_file_with_wide_characters_stays_bounded(reference, tmp_path):
    """The handler counts the file's size itself: in bytes, from the size of the file it reopens."""
    for run in range(2):  # 3 events of about 740 bytes each time: the file passes 4096 in the second
        log = EventLog(tmp_path, max_bytes=4096, backup_count=1)
        monitor = ModelMonitor("house", "1.0", reference, registry=CollectorRegistry(), events=log)
        for i in range(3):
            monitor.observe({**ROW, "city": "Zürich ✓"}, 300.0, prediction_id=f"{run}-{i}")
        log.close()
    sizes = [f.stat().st_size for f in tmp_path.iterdir()]
    assert len(sizes) == 2 and max(sizes) <= 4096, sizes
    assert [e["modelmon.inputs"]["city"] for e in read_events(tmp_path)] == ["Zürich ✓"] * 6


def test_batch_logs_anomalous_rows_with_their_flags(events_monitor, registry):
    monitor, directory = events_monitor(sample_rate=0.0)
    monitor.observe_batch(
        {"area": np.array([100.0, np.nan, 90.0]), "rooms": [2.0, 3.0, 4.0],
         "city": np.array(["paris", "lyon", "atlantis"], dtype=object)},
        np.array([300.0, 310.0, np.inf]),
    )
    events = read_events(directory)
    assert len(events) == 2
    assert events[0]["modelmon.flags.missing"] == ["area"] and events[0]["modelmon.inputs"]["area"] == "nan"
    assert events[1]["modelmon.flags.unseen"] == ["city"] and events[1]["modelmon.flags.nonfinite_prediction"]
    samples = scrape(registry)  # the scratch binners used for flags count nothing twice
    assert value(samples, "modelmon_feature_bin_total", model="house", version="1.0", feature="area",
                 bin="__missing__") == 1


def test_a_write_failure_is_counted_not_raised(events_monitor, registry):
    monitor, directory = events_monitor()
    (directory / f"predictions-{os.getpid()}.jsonl").mkdir()  # the file cannot be opened: a real failure
    monitor.observe(ROW, 300.0)
    assert value(scrape(registry), "modelmon_internal_errors_total", stage="log") == 1
    assert value(scrape(registry), "modelmon_predictions_total", model="house", version="1.0") == 1


def _observe_in_child(monitor):
    monitor.observe(ROW, 1.0, prediction_id="from-child")


def test_a_forked_worker_writes_its_own_file(events_monitor):
    monitor, directory = events_monitor()
    monitor.observe(ROW, 1.0, prediction_id="from-parent")
    child = multiprocessing.get_context("fork").Process(target=_observe_in_child, args=(monitor,))
    child.start()
    child.join(10)
    assert (directory / f"predictions-{child.pid}.jsonl").exists()
    assert sorted(e["event.id"] for e in read_events(directory)) == ["from-child", "from-parent"]
