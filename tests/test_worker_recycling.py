"""Worker recycling under real servers: the metrics directory and the scrape stay bounded.

Each case runs the same 40-feature model twice at once, in two metrics directories:
a baseline without recycling and a server replacing its workers all the time
(gunicorn ``--max-requests 1``, uvicorn ``--limit-max-requests 1``). Then: every
counter equals what was sent, the recycled directory holds at most twice the
baseline's files, and reading it as a scrape does costs at most 1.5x the CPU time
(medians of alternating reads in this process, so the machine's other load hits
both alike; an HTTP scrape of a server with ``--max-requests 1`` is always answered
by a worker that just booted, which would time the boot, not the files).
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, stop_process
from modelmon.serving.reference import Reference
from modelmon.serving.worker_files import MetricsDirectory

FIXTURES = Path(__file__).parent / "fixtures"
FEATURES = [f"x{i:02d}" for i in range(40)]
WORKERS = 3
GUNICORN_CONF = "from modelmon.gunicorn import child_exit, on_starting  # noqa: F401\n"


@pytest.fixture(scope="module")
def wide_reference(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({name: rng.normal(0.0, 1.0, 2_000) for name in FEATURES})
    frame["y"] = frame.sum(axis=1)
    path = tmp_path_factory.mktemp("wide") / "reference.yaml"
    Reference.from_data(frame, model="wide", version="1.0", prediction="y",
                        trained_at="2026-01-01T00:00:00Z").save(path)
    return path


def server_command(kind: str, port: int, conf: Path, recycle: bool) -> list[str]:
    python = sys.executable
    if kind == "uvicorn":
        return [python, "-m", "modelmon.uvicorn", "wide_asgi_app:app", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(WORKERS), "--log-level", "warning"] + (["--limit-max-requests", "1"] if recycle else [])
    command = [python, "-m", "gunicorn", "-c", str(conf), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}"]
    if kind == "gunicorn-preload":
        command.append("--preload")
    if kind == "gunicorn-uvicorn":
        command += ["-k", "uvicorn_worker.UvicornWorker"]
    if recycle:
        command += ["--max-requests", "1"]
    return command + ["wide_asgi_app:app" if kind == "gunicorn-uvicorn" else "wide_flask_app:app"]


class Server:
    """One server in multiprocess mode, in a directory of its own with a previous run's file in it."""

    def __init__(self, kind: str, root: Path, reference: Path, recycle: bool):
        self.dir = root / "metrics"
        self.dir.mkdir(parents=True)
        (self.dir / "counter_999999.db").write_bytes(b"a previous run's file, removed at start")
        conf = root / "gunicorn.conf.py"
        conf.write_text(GUNICORN_CONF)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.dir), "MODELMON_FLUSH_INTERVAL": "0.2",
               "MODELMON_REFERENCE": str(reference), "PYTHONPATH": str(FIXTURES)}
        self.log = open(root / "server.log", "wb")
        self.proc = subprocess.Popen(server_command(kind, port, conf, recycle), env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.url + "/metrics", timeout=10)
                return
            except requests.RequestException:  # not listening yet, or too busy starting to answer
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{kind} did not start:\n" + (root / "server.log").read_text())
                time.sleep(0.2)

    def predict(self, row: dict) -> int:
        """One request on a new connection (retried while a worker is being replaced); the worker's pid."""
        for _ in range(200):
            try:
                response = requests.post(self.url + "/predict", json=row, headers={"Connection": "close"}, timeout=10)
            except requests.ConnectionError:
                time.sleep(0.05)
                continue
            assert response.status_code == 200, response.text
            return response.json()["pid"]
        pytest.fail("the server stopped answering")

    def scrape(self) -> dict:
        text = requests.get(self.url + "/metrics", timeout=30).text
        samples: dict = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, frozenset(s.labels.items()))
                samples[key] = samples.get(key, 0.0) + s.value
        return samples

    def files(self) -> list[str]:
        return sorted(p.name for p in self.dir.glob("*.db"))

    def stop(self) -> None:
        stop_process(self.proc, 30, group=True)
        self.log.close()


def total(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= lbl)


def check_counts(samples: dict, sent: int) -> None:
    assert total(samples, "modelmon_predictions_total", model="wide") == sent
    assert total(samples, "modelmon_prediction_duration_seconds_count", model="wide") == sent
    assert total(samples, "modelmon_http_requests_total", handler="/predict", status="200") == sent
    for feature in ("x00", "x39"):
        assert total(samples, "modelmon_feature_bin_total", feature=feature) == sent
    assert total(samples, "modelmon_prediction_bin_total", output="y") == sent
    info = [lbl for (n, lbl) in samples if n == "modelmon_model_info"]
    assert len(info) == 1 and samples[("modelmon_model_info", info[0])] == 1  # dead workers' gauges are gone


def read_cpu_seconds(path: Path) -> float:
    """CPU time of reading a directory as modelmon's scrape does (lock, dead-worker check, merge, text)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    start = time.process_time()
    with MetricsDirectory(str(path)).reading():
        generate_latest(registry)
    return time.process_time() - start


@pytest.mark.timeout(1200)  # 1,000 worker boots: minutes on a loaded 2-core machine
@pytest.mark.parametrize("kind, lifetimes", [
    ("gunicorn", 1_000), ("gunicorn-preload", 1_000), ("gunicorn-uvicorn", 60), ("uvicorn", 40),
])
def test_recycled_workers_keep_the_directory_and_the_scrape_bounded(kind, lifetimes, tmp_path, wide_reference):
    """gunicorn replaces a worker after each request; uvicorn checks its limit every 0.1 s, so it takes a few."""
    rng = np.random.default_rng(3)
    rows = [{name: float(v) for name, v in zip(FEATURES, rng.normal(0.0, 1.0, 40))} for _ in range(32)]
    baseline = Server(kind, tmp_path / "baseline", wide_reference, recycle=False)
    recycled = Server(kind, tmp_path / "recycled", wide_reference, recycle=True)
    try:
        assert "counter_999999.db" not in baseline.files() + recycled.files()
        pids: set[int] = set()
        sent = 0
        deadline = time.monotonic() + 600
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            while len(pids) < lifetimes + WORKERS and time.monotonic() < deadline:
                pids.update(pool.map(lambda i: recycled.predict(rows[i % 32]), range(sent, sent + WORKERS)))
                sent += WORKERS
            list(pool.map(lambda i: baseline.predict(rows[i % 32]), range(sent)))
        assert len(pids) >= lifetimes, f"only {len(pids)} worker lifetimes: the test proves nothing"
        time.sleep(1.0)  # every live worker has folded its pending counts (MODELMON_FLUSH_INTERVAL 0.2)
        for server in (baseline, recycled):  # where no hook folds (uvicorn), the scrape does
            check_counts(server.scrape(), sent)
        reads: dict[str, list[float]] = {"baseline": [], "recycled": []}
        for _ in range(15):
            for name, server in (("baseline", baseline), ("recycled", recycled)):
                reads[name].append(read_cpu_seconds(server.dir))
        baseline_files, recycled_files = baseline.files(), recycled.files()
    finally:
        baseline.stop()
        recycled.stop()
    assert len(recycled_files) <= 2 * len(baseline_files), (recycled_files, baseline_files)
    ratio = statistics.median(reads["recycled"]) / statistics.median(reads["baseline"])
    assert ratio <= 1.5, f"a scrape reads {ratio:.2f}x the baseline's CPU time: {reads}"


# -- a fold killed half-way ---------------------------------------------------

DEAD_PIDS = range(5_000_000, 5_000_120)  # above any pid_max (2**22): never alive

FOLDER = """
import sys, time
from modelmon.serving.worker_files import MetricsDirectory
print("folding", flush=True)
start = time.perf_counter()
MetricsDirectory(sys.argv[1]).fold_dead_workers()
print(time.perf_counter() - start, flush=True)
"""


def worker_files(path: Path, reference: Path) -> None:
    """Files of one real worker: a monitor in multiprocess mode that observed 50 rows."""
    script = (
        "import numpy as np\n"
        "from modelmon import ModelMonitor\n"
        f"m = ModelMonitor('wide', '1.0', {str(reference)!r}, dependencies=('numpy',))\n"
        "rng = np.random.default_rng(5)\n"
        f"for _ in range(50): m.observe(dict(zip({FEATURES!r}, rng.normal(0, 1, 40).tolist())), 0.5)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


def read_totals(path: Path, fold: bool = True) -> dict:
    """Counter, histogram and summary samples, as modelmon's scrape reads them (or the client's, unfolded)."""
    if fold:
        with MetricsDirectory(str(path)).reading() as files:
            families = MultiProcessCollector.merge(files)
    else:
        families = MultiProcessCollector.merge([str(p) for p in path.glob("*.db")])
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples
            if f.type != "gauge"}


def test_a_fold_killed_anywhere_loses_and_doubles_nothing(tmp_path, wide_reference):
    template = tmp_path / "template"
    template.mkdir()
    worker_files(template, wide_reference)
    (written_pid,) = {p.name.rsplit("_", 1)[1][:-3] for p in template.glob("*.db")}
    one_worker = read_totals(template, fold=False)
    expected = {key: value * len(DEAD_PIDS) for key, value in one_worker.items()}

    def dead_directory(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        for file in template.glob("*.db"):
            data = file.read_bytes()
            for pid in DEAD_PIDS:
                (path / file.name.replace(written_pid, str(pid))).write_bytes(data)
        return path

    def start_fold(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", FOLDER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "folding\n"
        return proc

    calibration = dead_directory("calibration")
    proc = start_fold(calibration)
    duration = float(proc.stdout.readline())
    proc.wait()
    assert read_totals(calibration) == pytest.approx(expected, rel=1e-12)  # float sums in another order
    assert len(list(calibration.glob("*.db"))) == 3  # counter, histogram, summary aggregates

    def kill_at(proc: subprocess.Popen, moment: str, path: Path) -> None:
        """SIGKILL the fold at a moment: after a delay, or as soon as a file shows that it has
        begun writing its aggregates (before its commit) or committed (the journal exists)."""
        if moment.endswith(" s"):
            time.sleep(float(moment[:-2]))
        else:
            sign = path / ("counter_folded.db.new" if moment == "writing" else "modelmon-fold.journal")
            deadline = time.monotonic() + 60
            while not sign.exists() and proc.poll() is None and time.monotonic() < deadline:
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    seen = {"before commit": 0, "after commit": 0}
    moments = ["writing", "committed"] * 3 + [f"{duration * i / 16:.4f} s" for i in range(18)]
    for i, moment in enumerate(moments):
        path = dead_directory(f"run{i}")
        kill_at(start_fold(path), moment, path)
        names = os.listdir(path)
        if "modelmon-fold.journal" in names:
            seen["after commit"] += 1
        elif any(n.endswith(".new") for n in names):
            seen["before commit"] += 1
        assert read_totals(path) == pytest.approx(expected, rel=1e-12), f"killed at {moment}"
        assert not any(n.endswith(".new") or n.endswith(".journal") for n in os.listdir(path))
    # the kills at "writing" and "committed" land in each half unless the fold outran the poll
    assert seen["before commit"] and seen["after commit"], f"no kill landed in both halves of a fold: {seen}"
