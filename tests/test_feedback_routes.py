"""The routes modelmon adds to a service's port, bounded and closable, on real servers.

gunicorn (Flask app, tests/fixtures/feedback_flask_app.py) and uvicorn (FastAPI app,
tests/fixtures/feedback_asgi_app.py): a 200 MB body, declared or chunked, is refused
with 413 while the worker's peak memory (VmHWM in /proc/<pid>/status) grows by at most
a few MB; 20 KB prediction ids are refused with 400; a wrong or missing token with 401;
normal labels are joined as before; every refusal is counted at stage "feedback". And
/metrics can be kept off the public port: served by gunicorn's master on a loopback
port of its own (modelmon.gunicorn.serve_metrics), or by modelmon.start_http_server in
a single uvicorn process.
"""
from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, stop_process

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "s3cr3t-feedback-token-0123456789abcdef"
MAX_GROWTH = 5 * 1024 * 1024  # bytes of peak RSS a refused 200 MB body may cost
REQUESTS = 120  # predictions spread over several workers


class Server:
    """A real gunicorn or uvicorn serving one of the fixture apps on a free port."""

    def __init__(self, kind: str, tmp_path: Path, reference_path: Path, *, workers: int = 1,
                 env: dict | None = None, conf: str = ""):
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "MODELMON_FLUSH_INTERVAL": "0.2",
                   "MODELMON_REFERENCE": str(reference_path), "MODELMON_OUTCOMES": str(tmp_path / "outcomes.sqlite"),
                   "PYTHONPATH": str(FIXTURES)}
        for name in ("MODELMON_FEEDBACK_TOKEN", "MODELMON_FEEDBACK_TOKEN_FILE"):
            environ.pop(name, None)
        environ.update(env or {})
        if kind == "gunicorn":
            config = tmp_path / "gunicorn.conf.py"
            config.write_text("from modelmon.gunicorn import child_exit, on_starting  # noqa: F401\n" + conf)
            argv = [sys.executable, "-m", "gunicorn", "-c", str(config), "-w", str(workers),
                    "-b", f"127.0.0.1:{self.port}", "feedback_flask_app:app"]
        else:
            argv = [sys.executable, "-m", "modelmon.uvicorn", "feedback_asgi_app:app", "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning"]
            if workers > 1:
                argv += ["--workers", str(workers)]
        self.log = open(tmp_path / f"{kind}.log", "wb")
        self.proc = subprocess.Popen(argv, env=environ, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/healthz", timeout=1)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{kind} did not start:\n" + (tmp_path / f"{kind}.log").read_text())
                time.sleep(0.2)

    def worker_pid(self) -> int:
        return requests.get(self.url + "/healthz", headers={"Connection": "close"}, timeout=5).json()["pid"]

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.log.close()


@pytest.fixture
def reference_path(tmp_path, reference) -> Path:
    path = tmp_path / "reference.yaml"
    reference.save(path)
    return path


def peak_rss(pid: int) -> int:
    """VmHWM of a process, in bytes: its peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def raw_post(port: int, path: str, headers: dict[str, str], chunks, chunked: bool = False) -> tuple[int, dict, dict]:
    """POST from a generator over a plain socket, stopping as soon as the server answers
    (as a client that reads while it sends would); returns (status, headers, JSON body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += ("Transfer-Encoding: chunked\r\n" if chunked else "") + "\r\n"
        sock.sendall(head.encode("latin-1"))
        sent = 0
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there: stop sending
            data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(body) if body else {}
    finally:
        sock.close()


LABEL = b'{"prediction_id": "' + b"p" * 20_000 + b'", "actual": 1.0}'
BIG = 10_000 * (len(LABEL) + 1) + 1  # bytes of the body: 10,000 labels with 20 KB prediction ids


def big_body():
    """The issue's body, about 200 MB of one JSON list (valid, BIG bytes), streamed."""
    yield b"["
    for i in range(0, 10_000, 10):
        yield b",".join([LABEL] * 10) + (b"," if i + 10 < 10_000 else b"]")


def post(url: str, body, token: str | None = TOKEN, **headers) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url + "/feedback", json=body, headers={"Connection": "close", **headers}, timeout=10)


def scrape(url: str) -> dict:
    text = requests.get(url, timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def refused_count(url: str) -> float:
    return scrape(url).get(("modelmon_internal_errors_total", frozenset({("stage", "feedback")})), 0.0)


def check_refusals(server: Server, metrics_url: str) -> None:
    """The whole behaviour of the route on one server (token configured)."""
    url = server.url
    pid = server.worker_pid()
    # Normal label traffic first (it also warms every code path up before measuring).
    for i in range(20):
        requests.post(url + "/predict", json={"area": 100.0, "rooms": 2.0, "city": "nice"},
                      headers={"X-Request-Id": f"p{i}", "Connection": "close"}, timeout=5).raise_for_status()
    time.sleep(0.5)  # > MODELMON_FLUSH_INTERVAL: predictions are in the outcome store
    answer = post(url, [{"prediction_id": f"p{i}", "actual": 310.0} for i in range(10)])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"joined": 10, "unmatched": 0}
    assert post(url, {"prediction_id": "p10", "actual": 290.0}).json() == {"joined": 1, "unmatched": 0}
    assert post(url, {"prediction_id": "nobody", "actual": 1.0}).json() == {"joined": 0, "unmatched": 1}
    assert post(url, {"prediction_id": 11, "actual": 300}).json() == {"joined": 0, "unmatched": 1}  # int id: "11"
    before = peak_rss(pid)
    refusals = 0

    # 200 MB with an honest Content-Length: refused before a byte of the body is read.
    status, headers, answer = raw_post(server.port, "/feedback",
                                       {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}",
                                        "Content-Length": str(BIG)}, big_body())
    refusals += 1
    assert status == 413 and "over the limit of 1048576 bytes" in answer["error"], (status, answer)
    assert headers["content-type"].startswith("application/json")
    # The same body chunked, with no Content-Length: read up to the cap, then refused.
    status, _, answer = raw_post(server.port, "/feedback",
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                                 big_body(), chunked=True)
    refusals += 1
    assert status == 413 and "over the limit" in answer["error"], (status, answer)
    assert server.worker_pid() == pid, "the worker was replaced"
    grown = peak_rss(pid) - before
    print(f"\n{server.proc.args[2]}: peak RSS {before / 2**20:.1f} MiB before, grew by {grown / 2**20:.2f} MiB "
          f"over two refused 200 MB bodies")
    assert grown <= MAX_GROWTH, f"peak RSS grew by {grown / 2**20:.1f} MiB"

    # 20 KB prediction ids, in a body under the cap: 400, naming the bound.
    answer = post(url, [{"prediction_id": "p" * 20_000, "actual": 1.0}])
    refusals += 1
    assert answer.status_code == 400 and "1 to 256 characters" in answer.json()["error"], answer.text
    answer = post(url, {"prediction_id": "p1", "actual": "x" * 1000})
    refusals += 1
    assert answer.status_code == 400 and "at most 256 characters" in answer.json()["error"]
    answer = post(url, {"prediction_id": "p1", "actual": [1, 2]})
    refusals += 1
    assert answer.status_code == 400 and "actual must be" in answer.json()["error"]
    answer = post(url, [{"prediction_id": f"q{i}", "actual": 1} for i in range(10_001)])
    refusals += 1
    assert answer.status_code == 413 and "10000 per request" in answer.json()["error"]
    answer = requests.post(url + "/feedback", data=b"[" * 50_000, timeout=10,
                           headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    refusals += 1
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    answer = requests.post(url + "/feedback", data=b'{"prediction_id": "p1", "actual": 1}', timeout=10,
                           headers={"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"})
    refusals += 1
    assert answer.status_code == 415 and "application/json" in answer.json()["error"]

    # The token: missing, wrong, wrong scheme, and a 200 MB body without it (401, not read).
    for token, extra in ((None, {}), ("wrong", {}), (TOKEN[:-1], {}), (None, {"Authorization": f"Basic {TOKEN}"})):
        answer = post(url, {"prediction_id": "p12", "actual": 1.0}, token=token, **extra)
        refusals += 1
        assert answer.status_code == 401, (token, extra, answer.text)
        assert answer.json() == {"error": "missing or wrong bearer token"}
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    status, _, answer = raw_post(server.port, "/feedback",
                                 {"Content-Type": "application/json", "Content-Length": str(BIG)}, big_body())
    refusals += 1
    assert status == 401
    # None of them joined anything: p12 is still waiting for its label.
    assert post(url, {"prediction_id": "p12", "actual": 300.0}).json() == {"joined": 1, "unmatched": 0}

    time.sleep(0.5)
    assert refused_count(metrics_url) == refusals
    samples = scrape(metrics_url)
    m = frozenset({"model": "house", "version": "1.0"}.items())
    assert samples[("modelmon_outcomes_total", m)] == 12
    log = Path(server.log.name).read_text()
    assert TOKEN not in log and TOKEN[:-1] not in log  # refusals are logged, tokens never


def test_gunicorn_flask_feedback_is_bounded_and_needs_the_token(tmp_path, reference_path):
    token_file = tmp_path / "feedback-token"
    token_file.write_text(TOKEN + "\n")
    server = Server("gunicorn", tmp_path, reference_path, env={"MODELMON_FEEDBACK_TOKEN_FILE": str(token_file)})
    try:
        check_refusals(server, server.url + "/metrics")
    finally:
        server.stop()


def test_uvicorn_fastapi_feedback_is_bounded_and_needs_the_token(tmp_path, reference_path):
    server = Server("uvicorn", tmp_path, reference_path, env={"MODELMON_FEEDBACK_TOKEN": TOKEN})
    try:
        check_refusals(server, server.url + "/metrics")
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_an_unusable_token_stops_the_service_at_start(tmp_path, reference_path, kind):
    """A token file that is configured but empty or missing never opens the route silently."""
    (tmp_path / "empty").write_text("\n")
    for path, message in ((tmp_path / "empty", "is empty"), (tmp_path / "absent", "cannot read")):
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir(exist_ok=True)
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "MODELMON_REFERENCE": str(reference_path),
               "MODELMON_OUTCOMES": str(tmp_path / "outcomes.sqlite"), "PYTHONPATH": str(FIXTURES),
               "MODELMON_FEEDBACK_TOKEN_FILE": str(path)}
        env.pop("MODELMON_FEEDBACK_TOKEN", None)
        if kind == "gunicorn":
            argv = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{free_port()}",
                    "feedback_flask_app:app"]
        else:
            argv = [sys.executable, "-m", "uvicorn", "feedback_asgi_app:app", "--port", str(free_port())]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "FeedbackConfigError" in done.stderr and message in done.stderr, done.stderr[-2000:]


def test_without_a_token_the_route_is_open_as_before(tmp_path, reference_path):
    server = Server("gunicorn", tmp_path, reference_path)
    try:
        requests.post(server.url + "/predict", json={"area": 100.0, "rooms": 2.0, "city": "nice"},
                      headers={"X-Request-Id": "a"}, timeout=5).raise_for_status()
        time.sleep(0.5)
        assert post(server.url, {"prediction_id": "a", "actual": 1.0}, token=None).json() == {"joined": 1, "unmatched": 0}
        assert post(server.url, {"prediction_id": "a", "actual": 1.0}, token="anything").status_code == 200
    finally:
        server.stop()


def test_gunicorn_master_serves_metrics_off_the_public_port(tmp_path, reference_path):
    """instrument_app(metrics_path=None) and serve_metrics in when_ready: /metrics only on
    the loopback port of the master, summed over 3 workers."""
    metrics_port = free_port()
    server = Server("gunicorn", tmp_path, reference_path, workers=3, env={"METRICS_OFF_APP": "1"},
                    conf=f"from modelmon.gunicorn import serve_metrics\nwhen_ready = serve_metrics({metrics_port})\n")
    try:
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
        def predict(_) -> str:  # in parallel, so that the kernel hands them to several workers
            response = requests.post(server.url + "/predict", json={"area": 90.0, "rooms": 3.0, "city": "lyon"},
                                     headers={"Connection": "close"}, timeout=10)
            response.raise_for_status()
            return response.headers["X-Worker-Pid"]

        with ThreadPoolExecutor(8) as pool:
            pids = set(pool.map(predict, range(REQUESTS)))
        assert len(pids) >= 2, "all requests went to one worker; the test proves nothing"
        time.sleep(1.0)
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        m = frozenset({"model": "house", "version": "1.0"}.items())
        assert samples[("modelmon_predictions_total", m)] == REQUESTS
        http_total = sum(v for (n, lbl), v in samples.items() if n == "modelmon_http_requests_total"
                         and ("handler", "/predict") in lbl)
        assert http_total == REQUESTS
        served = {dict(lbl)["pid"] for (n, lbl) in samples if n == "process_resident_memory_bytes"}
        assert pids <= served
    finally:
        server.stop()


def test_gunicorn_master_serving_metrics_still_replaces_dead_workers(tmp_path, reference_path):
    """A fork while the master's metrics thread holds the directory's lock used to hand the
    lock to the new worker for its life: the master's next fold, in child_exit, then hung
    (the first SIGKILLed worker was never replaced). Forks now wait for the lock."""
    import threading

    metrics_port = free_port()
    server = Server("gunicorn", tmp_path, reference_path, workers=2, env={"METRICS_OFF_APP": "1"},
                    conf=f"from modelmon.gunicorn import serve_metrics\nwhen_ready = serve_metrics({metrics_port})\n")
    stop, scrapes, failures = threading.Event(), [0], []

    def scraper() -> None:
        while not stop.is_set():
            try:
                requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).raise_for_status()
                scrapes[0] += 1
            except requests.RequestException as exc:
                failures.append(exc)
                return

    def workers() -> set[int]:
        return {int(pid) for pid in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()}

    threads = [threading.Thread(target=scraper) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for kill in range(30):
            victim = min(workers())
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while not (victim not in (now := workers()) and len(now) == 2):
                assert time.monotonic() < deadline, f"kill {kill}: worker {victim} not replaced in 10 s: {now}"
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop()
    assert not failures and scrapes[0] > 30, (scrapes, failures[:1])

def test_uvicorn_serves_metrics_off_the_public_port(tmp_path, reference_path):
    metrics_port = free_port()
    server = Server("uvicorn", tmp_path, reference_path, env={"METRICS_OFF_APP": "1", "METRICS_PORT": str(metrics_port)})
    try:
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
        for _ in range(5):
            requests.post(server.url + "/predict", json={"area": 90.0, "rooms": 3.0, "city": "lyon"},
                          timeout=5).raise_for_status()
        time.sleep(0.5)
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert samples[("modelmon_predictions_total", frozenset({"model": "house", "version": "1.0"}.items()))] == 5
    finally:
        server.stop()


def test_uvicorn_supervisor_serves_metrics_off_the_public_port(tmp_path, reference_path):
    """python -m modelmon.uvicorn --workers 3 with MODELMON_METRICS_PORT: the supervisor
    serves /metrics summed over the workers, the app's port none."""
    metrics_port = free_port()
    server = Server("uvicorn", tmp_path, reference_path, workers=3,
                    env={"METRICS_OFF_APP": "1", "MODELMON_METRICS_PORT": str(metrics_port)})
    try:
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
        def predict(_) -> int:
            requests.post(server.url + "/predict", json={"area": 90.0, "rooms": 3.0, "city": "lyon"},
                          headers={"Connection": "close"}, timeout=10).raise_for_status()
            return server.worker_pid()

        with ThreadPoolExecutor(8) as pool:
            pids = set(pool.map(predict, range(REQUESTS)))
        assert len(pids) >= 2, "all requests went to one worker; the test proves nothing"
        time.sleep(1.0)
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        m = frozenset({"model": "house", "version": "1.0"}.items())
        assert samples[("modelmon_predictions_total", m)] == REQUESTS
        served = {int(dict(lbl)["pid"]) for (n, lbl) in samples if n == "process_resident_memory_bytes"}
        assert pids <= served
    finally:
        server.stop()

# -- the framework-neutral core, in process ------------------------------------------

def test_token_precedence_and_start_up_errors(tmp_path):
    from modelmon.serving.feedback import FeedbackConfigError, resolve_token

    file = tmp_path / "token"
    file.write_text("from-file\n")
    env = {"MODELMON_FEEDBACK_TOKEN": "from-env"}
    assert resolve_token(environ={}) is None
    assert resolve_token("argument", environ=env) == "argument"
    assert resolve_token(token_file=file, environ=env) == "from-file"
    assert resolve_token(environ=env) == "from-env"
    assert resolve_token(environ={"MODELMON_FEEDBACK_TOKEN_FILE": str(file)}) == "from-file"
    (tmp_path / "empty").write_text(" \n")
    for kwargs, environ, message in (
        ({"token": ""}, {}, "is empty"),
        ({"token": "two words"}, {}, "printable ASCII"),
        ({"token": "a", "token_file": file}, {}, "not both"),
        ({}, {"MODELMON_FEEDBACK_TOKEN": ""}, "is empty"),
        ({}, {**env, "MODELMON_FEEDBACK_TOKEN_FILE": str(file)}, "not both"),
        ({}, {"MODELMON_FEEDBACK_TOKEN_FILE": str(tmp_path / "empty")}, "is empty"),
        ({}, {"MODELMON_FEEDBACK_TOKEN_FILE": str(tmp_path / "absent")}, "cannot read"),
    ):
        with pytest.raises(FeedbackConfigError, match=message) as raised:
            resolve_token(**kwargs, environ=environ)
        assert "from-env" not in str(raised.value) and "from-file" not in str(raised.value)


def test_record_labels_and_record_label_bytes_have_the_same_bounds(monitor, registry):
    from conftest import scrape as scrape_registry
    from modelmon.serving.feedback import FeedbackLimits, read_capped, record_label_bytes, record_labels

    monitor.observe({"area": 100.0, "rooms": 2.0, "city": "nice"}, 300.0, prediction_id="a")
    assert record_labels(monitor, {"prediction_id": "a", "actual": 310.0}) == (200, {"joined": 1, "unmatched": 0})
    assert record_labels(monitor, [{"prediction_id": "p" * 257, "actual": 1}])[0] == 400
    assert record_labels(monitor, {"prediction_id": True, "actual": 1})[0] == 400
    assert record_labels(monitor, {"prediction_id": "b", "actual": {"x": 1}})[0] == 400
    assert record_labels(monitor, [{"prediction_id": "b", "actual": 1}] * 10_001)[0] == 413
    assert record_labels(monitor, "nonsense")[0] == 400
    small = FeedbackLimits(max_bytes=100, max_labels=2, max_id_length=4, max_label_length=3)
    assert record_labels(monitor, [{"prediction_id": "b", "actual": 1}] * 3, limits=small)[0] == 413
    assert record_labels(monitor, {"prediction_id": "b", "actual": "abcd"}, limits=small)[0] == 400
    assert record_label_bytes(monitor, b'{"prediction_id": "b", "actual": 1}') == (200, {"joined": 0, "unmatched": 1})
    assert record_label_bytes(monitor, b"x" * 101, limits=small)[0] == 413
    assert record_label_bytes(monitor, b"{not json")[0] == 400
    assert record_label_bytes(monitor, b"[" * 100_000)[0] == 400  # too deep for the parser: 400, not a crash
    assert scrape_registry(registry)[("modelmon_internal_errors_total", frozenset({("stage", "feedback")}))] == 10

    reads = []

    def read(n: int) -> bytes:
        reads.append(n)
        return b"x" * n

    from modelmon.serving.feedback import Refused

    with pytest.raises(Refused) as refused:  # an endless chunked body: read to the cap + 1, no further
        read_capped(read, None, 1000)
    assert refused.value.status == 413 and sum(reads) == 1001
    assert read_capped(lambda n: b"", None, 1000) == b""
    with pytest.raises(Exception, match="positive integer"):
        FeedbackLimits(max_bytes=0)


def test_the_native_demo_stack_gives_its_service_and_traffic_a_token(tmp_path, monkeypatch):
    """demo/stack.py makes a token per run; the demo service refuses labels without it and
    demo/traffic.py sends it (labels joined, the only refusal counted is ours)."""
    from demo.stack import NativeStack, Ports
    from demo.traffic import Traffic

    stack = NativeStack(tmp_path, Ports.free())
    stack.launch(stack.demo_service())
    try:
        token = stack.token_file.read_text().strip()
        assert len(token) >= 32 and stack.token_file.stat().st_mode & 0o077 == 0
        url = stack.url("demo")
        assert post(url, {"prediction_id": "x", "actual": 1.0}, token=None).status_code == 401
        monkeypatch.setenv("MODELMON_FEEDBACK_TOKEN_FILE", str(stack.token_file))
        from demo.traffic import feedback_token

        traffic = Traffic(url, "steady", 5, token=feedback_token())
        for _ in range(20):
            traffic.predict_one()
        assert traffic.failed == 0
        time.sleep(1.5)  # > MODELMON_FLUSH_INTERVAL: predictions are in the shared outcome store
        traffic.labels = [(0.0, pid, actual) for _, pid, actual in traffic.labels]
        traffic.send_due_labels()
        time.sleep(1.5)
        samples = scrape(url + "/metrics")
        assert sum(v for (n, _), v in samples.items() if n == "modelmon_outcomes_total") == 20
        assert samples[("modelmon_internal_errors_total", frozenset({("stage", "feedback")}))] == 1
    finally:
        stack.stop()


def test_demo_traffic_finds_the_token_as_the_service_does(tmp_path, monkeypatch):
    from demo import traffic

    monkeypatch.delenv("MODELMON_FEEDBACK_TOKEN", raising=False)
    monkeypatch.delenv("MODELMON_FEEDBACK_TOKEN_FILE", raising=False)
    monkeypatch.setattr(traffic, "STACK_TOKEN_FILE", tmp_path / "absent")
    assert traffic.feedback_token() is None
    (tmp_path / "stack-token").write_text("from-make-demo\n")
    monkeypatch.setattr(traffic, "STACK_TOKEN_FILE", tmp_path / "stack-token")  # a second terminal's make demo
    assert traffic.feedback_token() == "from-make-demo"
    monkeypatch.setenv("MODELMON_FEEDBACK_TOKEN", "from-env")  # compose
    assert traffic.feedback_token() == "from-env"
