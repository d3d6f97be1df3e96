"""Delayed labels across hosts: the Redis outcome store against a real redis-server.

In process: a bad URL fails at start-up without showing its password; paths and
sqlite:// URLs still give the SQLite store; two stores on one Redis (two hosts) join a
label made on either; the TTL holds; a Redis that is down or paused (SIGSTOP: slow)
never makes ``observe`` wait and makes a label wait at most about its socket timeout,
every failure counted in modelmon_internal_errors_total{stage="outcome"}; the queue is
bounded. Then two gunicorn services with nothing shared but the Redis URL: predictions
on one, labels posted to the other, and Redis paused, stopped and restarted in the middle.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, scrape, stop_process, total, value
from modelmon import ModelMonitor
from modelmon.serving.outcomes import OutcomeStore
from modelmon.serving.redis_store import RedisOutcomeStore
from modelmon.serving.stores import open_store
from redis_server import RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
ROW = {"area": 100.0, "rooms": 3.0, "city": "paris"}


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def monitor_on(reference, store) -> tuple[ModelMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    return ModelMonitor("house", "1.0", reference, registry=registry, dependencies=("numpy",),
                        outcomes=store), registry


def outcome_errors(registry) -> float:
    return value(scrape(registry), "modelmon_internal_errors_total", stage="outcome")


# -- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "redis://", "redis://:hunter2@db.example:port/0", "redis://u:hunter2@db.example/zero",
    "redis://:hunter2@db.example/0?password=hunter2", "redis://db.example/0?ttl=-5", "redis://db.example/0?ttl=x",
    "redis://db.example/0?timeout=0", "redis://db.example/0?max_pending=0", "memcached://db.example:11211",
    "unix://", "sqlite://",
])
def test_an_unusable_url_fails_at_start_up_without_its_password(reference, url):
    with pytest.raises(ValueError) as raised:
        ModelMonitor("house", "1.0", reference, registry=CollectorRegistry(), outcomes=url)
    message = str(raised.value)
    assert "hunter2" not in message
    assert "redis://" in message or "sqlite:" in message or "expected" in message
    if "db.example" in url:
        assert "db.example" in message  # the URL is named, less its secrets


def test_paths_and_sqlite_urls_still_give_the_sqlite_store(tmp_path):
    by_path = open_store(str(tmp_path / "a.sqlite"))
    assert isinstance(by_path, OutcomeStore) and by_path.path == tmp_path / "a.sqlite"
    assert open_store(f"sqlite://{tmp_path}/a.sqlite") is by_path  # one store per file in a process
    assert open_store(tmp_path / "a.sqlite") is by_path
    store = OutcomeStore()
    assert open_store(store) is store


def test_the_same_url_gives_the_same_store_and_redis_down_at_start_up_is_no_error(reference):
    url = f"redis://127.0.0.1:{free_port()}/0?prefix=test-same"  # nothing listens there
    assert open_store(url) is open_store(url)
    monitor, _ = monitor_on(reference, url)  # starting does not need Redis up
    monitor.observe(ROW, 300.0, prediction_id="p")


# -- in process, two stores on one Redis as two hosts ------------------------------


def test_a_label_on_one_host_joins_a_prediction_made_on_another(reference, redis_server):
    host_a = RedisOutcomeStore(redis_server.url + "?prefix=two-hosts")
    host_b = RedisOutcomeStore(redis_server.url + "?prefix=two-hosts")
    a, registry_a = monitor_on(reference, host_a)
    b, registry_b = monitor_on(reference, host_b)
    for i in range(100):
        a.observe(ROW, 300.0 + i, prediction_id=f"p{i}")
    host_a.sync()
    assert len(host_b) == 100
    assert all(b.record_outcome(f"p{i}", 310.0 + i) for i in range(100))
    assert not b.record_outcome("p0", 310.0)  # taken once
    b.flush()
    samples = scrape(registry_b)
    assert value(samples, "modelmon_outcomes_total", model="house", version="1.0") == 100
    assert value(samples, "modelmon_outcome_absolute_error_sum", model="house", version="1.0") == 1000.0
    assert value(samples, "modelmon_outcomes_unmatched_total", model="house", version="1.0", reason="unknown_id") == 1
    assert outcome_errors(registry_a) == outcome_errors(registry_b) == 0
    assert len(host_a) == 0


def test_the_writer_writes_without_being_asked_and_own_labels_need_no_wait(reference, redis_server):
    store = RedisOutcomeStore(redis_server.url + "?prefix=writer")
    monitor, _ = monitor_on(reference, store)
    monitor.observe(ROW, 300.0, prediction_id="mine")
    assert monitor.record_outcome("mine", 300.0)  # still queued: take writes this process's queue first
    monitor.observe(ROW, 300.0, prediction_id="later")
    deadline = time.monotonic() + 5
    while len(store) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(store) == 1 and store.pending() == 0


def test_predictions_expire_in_redis_and_in_a_queue_that_waited_too_long(reference, redis_server):
    store = RedisOutcomeStore(redis_server.url + "?prefix=ttl&ttl=1")
    monitor, registry = monitor_on(reference, store)
    monitor.observe(ROW, 300.0, prediction_id="old")
    store.sync()
    assert redis_server.client().ttl("ttl:house:old") == 1
    time.sleep(2.1)
    assert not monitor.record_outcome("old", 300.0)  # gone from Redis: unknown_id (Redis expires silently)
    store.remember(("house", "stale", "1.0", 300.0, time.time() - 5))  # queued longer than the TTL
    store.sync()
    monitor.flush()
    samples = scrape(registry)
    assert value(samples, "modelmon_outcomes_unmatched_total", model="house", version="1.0", reason="expired") == 1
    assert value(samples, "modelmon_outcomes_unmatched_total", model="house", version="1.0", reason="unknown_id") == 1
    assert len(store) == 0


def test_keys_are_unambiguous_and_values_keep_their_type(reference, redis_server):
    store = RedisOutcomeStore(redis_server.url + "?prefix=keys")
    store.put([("a:b", "c", "1", "x", time.time()), ("a", "b:c", "2", 1.5, time.time())])
    assert store.take("a:b", "c") == ("1", "x")
    assert store.take("a", "b:c") == ("2", 1.5)
    assert store.take("a", "b:c") is None


# -- Redis down or slow -------------------------------------------------------------


def observe_seconds(monitor, n: int, prefix: str) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        monitor.observe(ROW, 300.0, prediction_id=f"{prefix}{i}")
        times.append(time.perf_counter() - start)
    return times


def test_redis_down_never_blocks_observe_and_labels_fail_fast_and_counted(reference):
    store = RedisOutcomeStore(f"redis://127.0.0.1:{free_port()}/0?prefix=down&max_pending=500")
    monitor, registry = monitor_on(reference, store)
    times = observe_seconds(monitor, 2000, "d")
    assert statistics.median(times) < 0.001 and max(times) < 0.25, (statistics.median(times), max(times))
    assert store.pending() == 500  # bounded: the rest dropped and counted
    start = time.perf_counter()
    assert not monitor.record_outcome("d1", 300.0)
    assert time.perf_counter() - start < 1.0
    errors = outcome_errors(registry)
    assert errors >= 1500 + 1  # each dropped prediction, the failed label (and the writer's tries)


def test_a_paused_redis_delays_a_label_by_about_its_timeout_and_observe_not_at_all(reference, redis_server):
    store = RedisOutcomeStore(redis_server.url + "?prefix=paused&timeout=0.25")
    monitor, registry = monitor_on(reference, store)
    monitor.observe(ROW, 300.0, prediction_id="before")
    store.sync()
    redis_server.pause()
    try:
        times = observe_seconds(monitor, 2000, "s")
        label_times = []
        for i in range(3):
            start = time.perf_counter()
            assert not monitor.record_outcome(f"s{i}", 300.0)
            label_times.append(time.perf_counter() - start)
    finally:
        redis_server.resume()
    assert statistics.median(times) < 0.001 and max(times) < 0.25, (statistics.median(times), max(times))
    # at most the writer's round trip (it holds the lock) and this label's own: 2 x 0.25 s, plus slack
    assert max(label_times) < 1.0, label_times
    assert outcome_errors(registry) >= 3
    # back: the queue is written (after the writer's backoff), the labels join
    deadline = time.monotonic() + 10
    while store.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.pending() == 0
    assert monitor.record_outcome("before", 300.0)
    assert monitor.record_outcome("s1999", 300.0)


def test_a_batch_of_labels_waits_for_one_timeout_not_one_per_label(reference, redis_server):
    store = RedisOutcomeStore(redis_server.url + "?prefix=batch&timeout=0.25")
    monitor, registry = monitor_on(reference, store)
    for i in range(200):
        monitor.observe(ROW, 300.0, prediction_id=f"b{i}")
    store.sync()
    redis_server.pause()
    try:
        start = time.perf_counter()
        joined = [monitor.record_outcome(f"b{i}", 300.0) for i in range(200)]
        seconds = time.perf_counter() - start
    finally:
        redis_server.resume()
    assert not any(joined) and seconds < 1.0, seconds  # 200 x 0.25 s without failing fast
    assert outcome_errors(registry) == 200
    time.sleep(store.FAIL_FAST_SECONDS)
    assert all(monitor.record_outcome(f"b{i}", 300.0) for i in range(200))  # nothing was lost meanwhile


# -- two services, nothing shared but the Redis URL ----------------------------------


class Service:
    """gunicorn serving tests/fixtures/feedback_flask_app.py with its own directory: a host."""

    def __init__(self, name: str, root: Path, reference_path: Path, outcomes: str, workers: int = 2):
        home = root / name
        (home / "metrics").mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics"), "MODELMON_FLUSH_INTERVAL": "0.2",
               "MODELMON_REFERENCE": str(reference_path), "MODELMON_OUTCOMES": outcomes,
               "PYTHONPATH": str(FIXTURES)}
        for variable in ("MODELMON_FEEDBACK_TOKEN", "MODELMON_FEEDBACK_TOKEN_FILE"):
            env.pop(variable, None)
        config = home / "gunicorn.conf.py"
        config.write_text("from modelmon.gunicorn import child_exit, on_starting  # noqa: F401\n")
        self.log_path = home / "gunicorn.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(config), "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
             "feedback_flask_app:app"], cwd=home, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/healthz", timeout=2)
                return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a worker still booting
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{name} did not start:\n" + self.log_path.read_text())
                time.sleep(0.2)

    def predict(self, prediction_id: str, area: float) -> float:
        start = time.perf_counter()
        answer = requests.post(self.url + "/predict", json={**ROW, "area": area},
                               headers={"X-Request-Id": prediction_id}, timeout=10)
        assert answer.status_code == 200
        return time.perf_counter() - start

    def label(self, labels: list[dict]) -> tuple[dict, float]:
        start = time.perf_counter()
        answer = requests.post(self.url + "/feedback", json=labels, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json(), time.perf_counter() - start

    def metrics(self) -> dict:
        text = requests.get(self.url + "/metrics", timeout=10).text
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.log.close()


def wait_for_keys(server: RedisServer, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = server.client().dbsize()
        except Exception:
            found = None
        if found == n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{found} predictions in Redis, expected {n}")
        time.sleep(0.1)


def test_two_services_share_delayed_labels_through_redis_and_survive_its_restart(tmp_path, reference):
    reference_path = tmp_path / "reference.yaml"
    reference.save(reference_path)
    redis_server = RedisServer(tmp_path / "redis")  # appendonly: what was written survives the restart
    a = b = None
    try:
        a = Service("host-a", tmp_path, reference_path, redis_server.url)
        b = Service("host-b", tmp_path, reference_path, redis_server.url)
        assert not set(os.listdir(tmp_path / "host-a")) & {"outcomes.sqlite"}

        # 1. Redis up: predictions on A, labels on B
        for i in range(40):
            a.predict(f"up-{i}", 100.0 + i)
        wait_for_keys(redis_server, 40, 10)
        joined, _ = b.label([{"prediction_id": f"up-{i}", "actual": 300.0 + 3 * i + 1} for i in range(30)])
        assert joined == {"joined": 30, "unmatched": 0}

        # 2. Redis paused (slow): A answers predictions at once, B's labels within the timeout
        redis_server.pause()
        try:
            slow_predictions = [a.predict(f"slow-{i}", 100.0) for i in range(30)]
            slow_label, slow_label_seconds = b.label([{"prediction_id": "up-30", "actual": 1.0}])
        finally:
            redis_server.resume()
        assert slow_label == {"joined": 0, "unmatched": 1}

        # 3. Redis stopped: the same, with connections refused
        redis_server.stop()
        down_predictions = [a.predict(f"down-{i}", 100.0 + i) for i in range(30)]
        down_label, down_label_seconds = b.label([{"prediction_id": "up-31", "actual": 1.0}])
        assert down_label == {"joined": 0, "unmatched": 1}
        time.sleep(1.0)  # A's writer fails (and counts) while Redis is away

        # 4. Redis back on the same port and data: A's queue is written, everything joins again
        redis_server.start()
        wait_for_keys(redis_server, 10 + 30 + 30, 15)  # up-30..39 (kept on disk), slow-*, down-*
        for i in range(10):
            a.predict(f"after-{i}", 200.0)
        joined, _ = b.label([{"prediction_id": f"up-{i}", "actual": 300.0 + 3 * i + 1} for i in range(30, 40)]
                            + [{"prediction_id": f"down-{i}", "actual": 300.0 + 3 * i + 2} for i in range(30)])
        assert joined == {"joined": 40, "unmatched": 0}
        joined, _ = a.label([{"prediction_id": f"slow-{i}", "actual": 300.0} for i in range(30)])
        assert joined == {"joined": 30, "unmatched": 0}
        wait_for_keys(redis_server, 10, 10)
        joined, _ = b.label([{"prediction_id": f"after-{i}", "actual": 600.0} for i in range(10)])
        assert joined == {"joined": 10, "unmatched": 0}
        wait_for_keys(redis_server, 0, 5)

        time.sleep(0.6)  # the workers' flush timers (0.2 s) fold into the metrics files
        metrics_a, metrics_b = a.metrics(), b.metrics()
        house = {"model": "house", "version": "1.0"}
        assert total(metrics_b, "modelmon_outcomes_total", **house) == 30 + 40 + 10
        assert total(metrics_a, "modelmon_outcomes_total", **house) == 30
        # errors: |300 + 3i + 1 - 3 (100 + i)| = 1 for up-*, 2 for down-*, 0 for slow-* and after-*
        assert total(metrics_b, "modelmon_outcome_absolute_error_sum", **house) == pytest.approx(40 * 1 + 30 * 2)
        assert total(metrics_a, "modelmon_outcome_absolute_error_sum", **house) == 0
        assert total(metrics_b, "modelmon_outcomes_unmatched_total", reason="unknown_id") == 0
        assert total(metrics_b, "modelmon_internal_errors_total", stage="outcome") >= 2  # the two failed labels
        assert total(metrics_a, "modelmon_internal_errors_total", stage="outcome") >= 1  # the writer's tries
        print(f"prediction latency on A, Redis paused: median {statistics.median(slow_predictions) * 1e3:.1f} ms, "
              f"max {max(slow_predictions) * 1e3:.1f} ms; stopped: median "
              f"{statistics.median(down_predictions) * 1e3:.1f} ms, max {max(down_predictions) * 1e3:.1f} ms; "
              f"a label on B: paused {slow_label_seconds * 1e3:.0f} ms, stopped {down_label_seconds * 1e3:.0f} ms")
        for times in (slow_predictions, down_predictions):
            assert statistics.median(times) < 0.05 and max(times) < 0.5, times
        assert slow_label_seconds < 1.5 and down_label_seconds < 1.0
    finally:
        for service in (a, b):
            if service is not None:
                service.stop()
        redis_server.stop()


def test_an_error_answer_is_counted_but_does_not_stop_the_other_labels(reference, redis_server):
    store = RedisOutcomeStore(redis_server.url + "?prefix=wrongtype")
    monitor, registry = monitor_on(reference, store)
    redis_server.client().hset("wrongtype:house:foreign", "field", "value")  # a key someone else wrote
    monitor.observe(ROW, 300.0, prediction_id="mine")
    store.sync()
    assert not monitor.record_outcome("foreign", 300.0)  # WRONGTYPE: an answer, not an outage
    assert outcome_errors(registry) == 1
    assert monitor.record_outcome("mine", 300.0)  # at once: no fail-fast window for an answer


def test_many_threads_take_labels_at_once(reference, redis_server):
    import concurrent.futures

    store = RedisOutcomeStore(redis_server.url + "?prefix=threads")
    monitor, registry = monitor_on(reference, store)
    for i in range(640):
        monitor.observe(ROW, 300.0, prediction_id=f"t{i}")
    store.sync()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        joined = list(pool.map(lambda i: monitor.record_outcome(f"t{i}", 300.0), range(640)))
    assert all(joined) and outcome_errors(registry) == 0
