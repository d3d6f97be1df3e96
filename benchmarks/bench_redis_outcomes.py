"""Redis outcome store: memory per outstanding prediction, write rate, and the hot path with Redis down.

A real redis-server (Debian's package, no persistence) on a free loopback port. The
store's own writer puts 1,000,000 predictions awaiting a label (32-hex-digit ids, model
"house-price", version "1.4.0", a float prediction; then string class labels), and
``INFO memory`` (used_memory) is read before and after: the bytes per outstanding
prediction, so an operator can size ``maxmemory``. Then ``observe`` with a prediction id
is timed with Redis up, stopped (connections refused) and paused (SIGSTOP: accepted,
never answered), and a label's ``record_outcome`` with Redis down and paused.
"""
from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid

from prometheus_client import CollectorRegistry

from benchmarks.common import arguments, free_port, rows_of, table, target, training_data, write_result
from modelmon import ModelMonitor, Reference
from modelmon.serving.redis_store import RedisOutcomeStore


def start_redis(workdir: str, port: int) -> subprocess.Popen:
    import redis

    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def admin(store: RedisOutcomeStore):
    """A client of its own with a long timeout: FLUSHDB of a million keys takes longer than the store's 0.25 s."""
    import redis

    return redis.Redis.from_url(store.url.split("?")[0], socket_timeout=60)


def used_memory(store: RedisOutcomeStore) -> int:
    return int(admin(store).info("memory")["used_memory"])


def fill(store: RedisOutcomeStore, n: int, value) -> tuple[int, float]:
    """Bytes of Redis memory the n predictions take, and predictions written per second."""
    client = admin(store)
    client.flushdb()
    before = used_memory(store)
    now = time.time()
    start = time.perf_counter()
    for i in range(n):
        store.remember(("house-price", uuid.uuid4().hex, "1.4.0", value(i), now))
        if store.pending() >= 50_000:
            store.sync()
    store.sync()
    seconds = time.perf_counter() - start
    assert client.dbsize() == n
    return used_memory(store) - before, n / seconds


def hashed(store: RedisOutcomeStore, n: int, buckets: int) -> int:
    """Bytes per prediction if they were fields of ``buckets`` hashes (a layout the store does not use:
    one hash per time bucket when buckets is 1, small listpack-encoded hashes by id when n / buckets <= 128)."""
    import zlib

    client = admin(store)
    client.flushdb()
    before = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        prediction_id = uuid.uuid4().hex
        bucket = zlib.crc32(prediction_id.encode()) % buckets
        pipe.hset(f"modelmon:outcome:house-price:{bucket}", prediction_id, json.dumps(["1.4.0", 100_000.0 + i * 0.37]))
        if len(pipe) >= 5_000:
            pipe.execute()
    pipe.execute()
    used = int(client.info("memory")["used_memory"]) - before
    client.flushdb()
    return used


def timed(fn, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = arguments(__doc__)
    n = 100_000 if args.quick else 1_000_000
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    port = free_port()
    proc = start_redis(workdir, port)
    try:
        url = f"redis://127.0.0.1:{port}/0?max_pending=200000"
        store = RedisOutcomeStore(url)
        float_bytes, rate = fill(store, n, lambda i: 100_000.0 + i * 0.37)
        label_bytes, _ = fill(store, n, lambda i: f"class-{i % 10}")
        one_hash_bytes = hashed(store, n, 1)
        small_hash_bytes = hashed(store, n, max(1, n // 100))
        admin(store).flushdb()

        frame = training_data(rows=5_000)
        reference = Reference.from_data(frame, model="house-price", version="1.4.0", prediction="price")
        rows, predictions = rows_of(frame.head(1_000))
        monitor = ModelMonitor("house-price", "1.4.0", reference, registry=CollectorRegistry(), outcomes=store)

        def observe(i):
            monitor.observe(rows[i % 1000], predictions[i % 1000], prediction_id=f"p{i}")

        up = timed(observe, 20_000)
        store.sync()
        proc.send_signal(signal.SIGSTOP)
        paused = timed(lambda i: observe(100_000 + i), 20_000)
        paused_label = timed(lambda i: monitor.record_outcome(f"p{i}", 1.0), 5)
        proc.send_signal(signal.SIGCONT)
        store.sync()
        proc.terminate()
        proc.wait()
        down = timed(lambda i: observe(200_000 + i), 20_000)
        down_label = timed(lambda i: monitor.record_outcome(f"p{i}", 1.0), 5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    def us(values):
        return f"{statistics.median(values) * 1e6:.1f} / {sorted(values)[int(len(values) * 0.99)] * 1e6:.1f} / " \
               f"{max(values) * 1e6:.0f}"

    per_float, per_label = float_bytes / n, label_bytes / n
    markdown = (
        f"{n:,} outstanding predictions in Redis (one key each, `SET ... EX`): "
        f"**{per_float:.0f} bytes per prediction** with a float value, {per_label:.0f} with a class label "
        f"(used_memory; 1 GB of `maxmemory` holds about {1e9 / per_float / 1e6:.1f} million). "
        f"The writer put {rate:,.0f} predictions per second through its pipelines. For comparison, layouts "
        f"the store does not use (no per-prediction expiry before Redis 7.4's HEXPIRE): fields of one hash "
        f"{one_hash_bytes / n:.0f} bytes, of hashes of ~100 fields by id (listpack) {small_hash_bytes / n:.0f}.\n\n"
        + table(["observe with a prediction id", "median / p99 / max (us)"],
                [["Redis up", us(up)], ["Redis paused (SIGSTOP)", us(paused)], ["Redis stopped", us(down)]])
        + "\n\n" + table(["record_outcome", "median / max (ms)"],
                         [[f"Redis paused, timeout {store.timeout} s (once the writer has failed: at once)",
                           f"{statistics.median(paused_label) * 1e3:.0f} / {max(paused_label) * 1e3:.0f}"],
                          ["Redis stopped", f"{statistics.median(down_label) * 1e3:.1f} / {max(down_label) * 1e3:.1f}"]])
    )
    targets = [
        target("observe with Redis paused or stopped: median within 2x of Redis up",
               f"{statistics.median(paused) * 1e6:.1f} / {statistics.median(down) * 1e6:.1f} us vs "
               f"{statistics.median(up) * 1e6:.1f} us",
               max(statistics.median(paused), statistics.median(down)) < 2 * statistics.median(up)),
        target("a label with Redis paused: at most twice the socket timeout", f"{max(paused_label):.2f} s",
               max(paused_label) <= 2 * store.timeout + 0.1),
    ]
    write_result(args, "Redis outcome store", markdown, targets,
                 {"predictions": n, "bytes_per_float_prediction": per_float, "bytes_per_label_prediction": per_label,
                  "bytes_one_hash": one_hash_bytes / n, "bytes_small_hashes": small_hash_bytes / n,
                  "writes_per_second": rate})


if __name__ == "__main__":
    main()
