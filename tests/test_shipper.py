"""The shipper against a real Elasticsearch: volume, faults, bad input, restarts, rotation."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from elastic import elastic, es, namespace, write_events  # noqa: F401 (fixtures)
from prometheus_client.parser import text_string_to_metric_families

from modelmon.pipeline.shipper import Shipper, ShipperConfig, data_stream


def drain(shipper: Shipper) -> None:
    """Ship until there is nothing left to read."""
    while shipper.run_once():
        pass


def metric(shipper: Shipper, name: str) -> float:
    return shipper.registry.get_sample_value(f"modelmon_shipper_{name}")


def count(es, stream: str, query: dict | None = None) -> int:
    es.indices.refresh(index=stream)
    return es.count(index=stream, query=query or {"match_all": {}})["count"]


def exactly_once(es, stream: str, run: str, n: int) -> bool:
    """Events ``<run>-0`` ... ``<run>-<n-1>`` are each in ``stream``, and nothing else is."""
    ids = [f"{run}-{i}" for i in range(n)]
    return count(es, stream, {"ids": {"values": ids}}) == n == count(es, stream)


def lines(directory: Path) -> list[bytes]:
    return [line for f in sorted(directory.glob("predictions-*")) for line in f.read_bytes().splitlines()]


def test_ships_10000_events_exactly_once_with_mapped_types(es, tmp_path):
    events = tmp_path / "events"
    write_events(events, 10_000, run="big", max_bytes=512 * 1024, backup_count=100)
    assert len(list(events.glob("predictions-*.jsonl.*"))) >= 3  # the producer rotated
    shipper = Shipper(es, ShipperConfig(events, namespace=namespace(), state_dir=tmp_path / "state"))
    drain(shipper)
    stream = shipper.config.data_stream

    assert metric(shipper, "documents_indexed_total") == 10_000
    assert metric(shipper, "documents_duplicate_total") == 0
    assert metric(shipper, "backlog_bytes") == 0
    assert 0 <= metric(shipper, "lag_seconds") < 600  # the events were written just now
    assert exactly_once(es, stream, "big", 10_000)

    # The document is the line, unchanged.
    line = next(line for line in lines(events) if b'"big-42"' in line)
    hit = es.search(index=stream, query={"ids": {"values": ["big-42"]}})["hits"]["hits"]
    assert hit[0]["_source"] == json.loads(line)

    caps = es.field_caps(index=stream, fields="*")["fields"]
    expected = {
        "@timestamp": "date", "message": "text", "log.level": "keyword", "ecs.version": "keyword",
        "service.name": "keyword", "service.version": "keyword", "event.id": "keyword",
        "event.outcome": "keyword", "event.duration": "long", "trace.id": "keyword", "labels.region": "keyword",
        "error.type": "keyword", "error.message": "text", "modelmon.model": "keyword",
        "modelmon.version": "keyword", "modelmon.reference": "keyword", "modelmon.inputs": "flattened",
        "modelmon.outputs": "flattened", "modelmon.prediction.value": "double",
        "modelmon.flags.missing": "keyword", "modelmon.flags.unseen": "keyword",
        "modelmon.flags.out_of_range": "keyword", "modelmon.flags.invalid": "keyword",
        "modelmon.flags.nonfinite_prediction": "boolean", "modelmon.anomalous": "boolean",
    }  # fmt: skip
    assert {name: set(caps.get(name, {"absent": 0})) for name in expected} == {
        name: {kind} for name, kind in expected.items()
    }
    # Queries the dashboards rely on, against counts known from the generator.
    assert count(es, stream, {"term": {"modelmon.flags.missing": "LotFrontage"}}) == 1667  # i % 6 == 0
    assert count(es, stream, {"term": {"modelmon.inputs.Neighborhood": "Atlantis"}}) == 1429  # i % 7 == 0
    assert count(es, stream, {"term": {"event.outcome": "failure"}}) == 200  # i % 50 == 0
    assert count(es, stream, {"range": {"modelmon.prediction.value": {"gte": 150000}}}) == 9800


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_shipper(events: Path, state: Path, ns: str, url: str, port: int) -> subprocess.Popen:
    log = state.parent / f"shipper-{time.monotonic_ns()}.log"
    command = [
        sys.executable, "-m", "modelmon.cli", "ship", str(events), "--namespace", ns, "--state-dir", str(state),
        "--es-url", url, "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--max-backoff", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def up():
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return scrape(port)
        except OSError:
            return None

    wait_until(up, 30, "the shipper's metrics")
    return process


def shipped(port: int, total: float):
    def check():
        try:
            metrics = scrape(port)
        except OSError:
            return None
        return metrics if metrics["modelmon_shipper_documents_indexed_total"] >= total else None

    return check


def test_elasticsearch_outage_and_sigkill_lose_and_duplicate_nothing(elastic, es, tmp_path):
    from conftest import free_port

    events, state, ns = tmp_path / "events", tmp_path / "state", namespace()
    stream = data_stream(ns)
    port = free_port()
    options = {"max_bytes": 256 * 1024, "backup_count": 100}
    write_events(events, 3000, run="f", **options)
    first = start_shipper(events, state, ns, elastic.url, port)
    try:
        wait_until(shipped(port, 3000), 60, "the first 3000 events")

        elastic.stop()  # Elasticsearch goes away while the shipper runs
        write_events(events, 3000, run="f", first=3000, **options)
        outage = wait_until(
            lambda: (m := scrape(port))["modelmon_shipper_documents_retried_total"] > 0 and m, 30, "retries"
        )
        assert outage["modelmon_shipper_backlog_bytes"] > 0
        assert outage["modelmon_shipper_documents_indexed_total"] == 3000
        elastic.start()  # ... and comes back: the same process delivers what waited
        # A request cut by the outage may have been indexed after all: its resend is a duplicate.
        recovered = wait_until(lambda: (m := scrape(port))["modelmon_shipper_backlog_bytes"] == 0 and m, 90, "delivery")
        assert recovered["modelmon_shipper_documents_indexed_total"] <= 6000
        assert (
            recovered["modelmon_shipper_documents_indexed_total"]
            + recovered["modelmon_shipper_documents_duplicate_total"]
        ) == 6000
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        elastic.start()  # no-op when it runs

    # Written while no shipper runs; the restarted one resumes from the registry.
    write_events(events, 3000, run="f", first=6000, **options)
    assert json.loads((state / "registry.json").read_text())["files"]  # intact after SIGKILL
    second = start_shipper(events, state, ns, elastic.url, port)
    try:
        after = wait_until(shipped(port, 3000), 60, "delivery after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    assert after["modelmon_shipper_documents_indexed_total"] == 3000  # nothing acknowledged was resent
    assert after["modelmon_shipper_documents_duplicate_total"] == 0
    assert after["modelmon_shipper_lost_bytes_total"] == 0
    assert exactly_once(es, stream, "f", 9000)


def test_rejected_and_corrupt_lines_go_to_dead_letters_and_the_rest_flows(es, tmp_path):
    good = [json.loads(line) for line in lines(_events(tmp_path / "source", 6))]
    conflict = dict(good[1], **{"event.id": "conflict", "event.duration": "abc"})
    partial = json.dumps(dict(good[5], **{"event.id": "late"})).encode()
    body = b"\n".join(
        [
            json.dumps(good[0]).encode(),
            json.dumps(conflict).encode(),  # Elasticsearch refuses: event.duration is a long
            b"this is not json",
            b'{"@timestamp": "2026-11-26T19:00:00Z", "modelmon.prediction.value": NaN}',
            b"[1, 2, 3]",
            b"",
            *(json.dumps(doc).encode() for doc in good[2:5]),
            partial[:40],  # being written: no newline yet
        ]
    )
    events = tmp_path / "events"
    events.mkdir()
    (events / "predictions-77.jsonl").write_bytes(body)
    shipper = Shipper(es, ShipperConfig(events, namespace=namespace(), state_dir=tmp_path / "state"))
    drain(shipper)

    assert metric(shipper, "documents_indexed_total") == 4
    assert metric(shipper, "documents_rejected_total") == 1
    assert metric(shipper, "documents_corrupt_total") == 3
    assert metric(shipper, "backlog_bytes") == 40  # the half-written line waits
    dead = [json.loads(line) for line in shipper.dead_letter_path.read_text().splitlines()]
    assert [(d["kind"], d["offset"] > 0) for d in dead] == [("corrupt", True)] * 3 + [("rejected", True)]
    rejected = dead[3]
    assert rejected["status"] == 400
    assert rejected["error_type"] in ("document_parsing_exception", "mapper_parsing_exception")
    assert "event.duration" in rejected["reason"]
    assert json.loads(rejected["line"])["event.id"] == "conflict"
    assert "non-standard JSON constant NaN" in dead[1]["reason"]
    assert dead[0]["line"] == "this is not json"

    with open(events / "predictions-77.jsonl", "ab") as handle:  # the writer finishes the line
        handle.write(partial[40:] + b"\n")
    drain(shipper)
    assert metric(shipper, "documents_indexed_total") == 5
    assert metric(shipper, "backlog_bytes") == 0
    assert len(shipper.dead_letter_path.read_text().splitlines()) == 4
    stream = shipper.config.data_stream
    assert count(es, stream) == 5
    assert count(es, stream, {"ids": {"values": ["late", "conflict"]}}) == 1


def _events(directory: Path, n: int, first: int = 0, run: str = "s") -> Path:
    write_events(directory, n, run=run, first=first)
    return directory


def test_restart_resumes_and_a_replay_only_makes_duplicates(es, tmp_path):
    events, state = tmp_path / "events", tmp_path / "state"
    config = ShipperConfig(events, namespace=namespace(), state_dir=state)
    _events(events, 500)
    first = Shipper(es, config)
    drain(first)
    assert metric(first, "documents_indexed_total") == 500

    _events(events, 300, first=500)
    second = Shipper(es, config)
    drain(second)
    assert metric(second, "documents_indexed_total") == 300
    assert metric(second, "documents_duplicate_total") == 0

    (state / "registry.json").unlink()  # as if every acknowledgement had been lost
    third = Shipper(es, config)
    drain(third)
    assert metric(third, "documents_indexed_total") == 0
    assert metric(third, "documents_duplicate_total") == 800
    assert count(es, config.data_stream) == 800


def test_files_rotated_away_are_shipped_while_running_and_counted_when_lost(es, tmp_path):
    from conftest import free_port
    from elasticsearch import Elasticsearch

    events, state = tmp_path / "events", tmp_path / "state"
    config = ShipperConfig(events, namespace=namespace(), state_dir=state, batch_size=100)
    _events(events, 300, run="a")
    shipper = Shipper(es, config)
    assert shipper.run_once() == 100
    for path in events.glob("predictions-*"):
        path.unlink()  # rotated away (the producer deletes the oldest) after the shipper opened it
    drain(shipper)
    assert metric(shipper, "documents_indexed_total") == 300
    assert metric(shipper, "lost_bytes_total") == 0
    assert shipper.files == {}

    # Elasticsearch unreachable: the shipper records what waits, then stops; the file is
    # deleted before it runs again, and the loss is counted, not silent.
    _events(events, 50, run="b")
    size = sum(p.stat().st_size for p in events.glob("predictions-*"))
    down = Shipper(Elasticsearch(f"http://127.0.0.1:{free_port()}"), config)
    down.start()
    try:
        wait_until(lambda: metric(down, "documents_retried_total"), 30, "a failed delivery")
    finally:
        down.stop()
    assert metric(down, "backlog_bytes") == size
    for path in events.glob("predictions-*"):
        path.unlink()
    after = Shipper(es, config)
    drain(after)
    assert metric(after, "lost_bytes_total") == size
    assert metric(after, "lost_files_total") == 1
    assert metric(after, "documents_indexed_total") == 0
    assert count(es, config.data_stream) == 300


def test_metric_names_follow_the_contract(tmp_path):
    from modelmon.serving.metrics import SHIPPER_CONTRACT

    shipper = Shipper(None, ShipperConfig(tmp_path))
    exported = {m.name for m in shipper.registry.collect()}
    assert exported == {spec.name for spec in SHIPPER_CONTRACT}
    assert all(spec.name.startswith("modelmon_shipper_") and not spec.labels for spec in SHIPPER_CONTRACT)
