"""Real Prometheus, Alertmanager and webhook receivers on loopback, for tests.

``start_prometheus(config, rule_files)`` and ``start_alertmanager(config, templates)``
write the configuration into a fresh temporary directory, copy the rule or template
files into ``rules/`` or ``templates/`` beside it (where the shipped configurations
look for them), start the current line's binary (Prometheus 3.x, Alertmanager 0.3x,
built by scripts/install-prometheus3.sh) on a free 127.0.0.1 port and return once it is
ready. ``stop()`` ends the process and removes the directory; the servers are also
context managers. A missing binary fails the test, saying how to install it.
``binary(name, line)`` finds promtool and amtool of either line (``LINES``).
``rule_files_every(directory, paths, "1s")`` copies rule files with shorter group intervals,
``rule_files_at_most(directory, paths, "1m")`` with none longer than a minute but those
whose windows count their own steps.

``start_webhook_receiver()`` serves HTTP on loopback and keeps every JSON body
posted to it, for Alertmanager to notify.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pytest
import yaml

from demo.native import CURRENT, DEBIAN, INSTALL, LINES, find_binary  # noqa: F401 (for the tests)
from demo.native import free_port  # noqa: F401 (tests import it from here too)

INSTALL_HINT = INSTALL[DEBIAN]


def binary(name: str, line: str = CURRENT) -> str:
    """The path of prometheus, promtool, alertmanager or amtool of a line (Debian's
    packages or the current releases); fails the test, saying how to install it, if it is missing."""
    path = find_binary(name, line)
    if path is None:
        pytest.fail(f"{name} of the {line} line is not installed: {INSTALL.get(line, INSTALL[CURRENT])}", pytrace=False)
    return path


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
               details: Callable[[], str] = lambda: "") -> Any:
    """Call ``check`` until it returns something truthy, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{details()}")
        time.sleep(interval)


def _http(method: str, url: str, body: Any = None, timeout: float = 10) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:  # not listening (yet)
        return 0, b""


def _config_text(config: str | os.PathLike | Mapping) -> str:
    """A configuration given as text, as a file path, or as a mapping."""
    if isinstance(config, os.PathLike):
        return Path(config).read_text()
    if isinstance(config, Mapping):
        return yaml.safe_dump(dict(config), sort_keys=False)
    return config


class Server:
    """A server process on a loopback port, with its own working directory."""

    name = "server"

    def __init__(self, argv: list[str], workdir: Path, port: int):
        self.workdir, self.port = workdir, port
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        self.log_path = workdir / f"{self.name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)

    def log(self, last: int = 4000) -> str:
        """The end of the process's output."""
        return self.log_path.read_text(errors="replace")[-last:]

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` and decode the JSON answer; fails on a non-2xx status."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _http("GET", self.url + path + query)
        if not 200 <= status < 300:
            raise AssertionError(f"GET {path}{query}: HTTP {status}: {body[:500]!r}\n{self.log()}")
        return json.loads(body)

    def post(self, path: str, body: Any = None) -> bytes:
        status, answer = _http("POST", self.url + path, body)
        if not 200 <= status < 300:
            raise AssertionError(f"POST {path}: HTTP {status}: {answer[:500]!r}\n{self.log()}")
        return answer

    def _wait_ready(self, timeout: float) -> bool:
        """Wait for /-/ready; False if the process exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _http("GET", self.url + "/-/ready", timeout=2)[0] == 200:
                return True
            time.sleep(0.2)
        self.stop(remove=False)
        raise AssertionError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log()}")

    def stop(self, remove: bool = True) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Prometheus(Server):
    name = "prometheus"

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """The result of an instant query: a list of {metric, value} (or a scalar's pair)."""
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        return self.get("/api/v1/query", **params)["data"]["result"]

    def alerts(self) -> list[dict]:
        """Pending and firing alerts, as /api/v1/alerts lists them."""
        return self.get("/api/v1/alerts")["data"]["alerts"]

    def rule_groups(self) -> list[dict]:
        return self.get("/api/v1/rules")["data"]["groups"]

    def wait_for(self, query: str | Callable[["Prometheus"], Any], timeout: float = 60, interval: float = 0.5) -> Any:
        """Poll until a query returns samples (or a callable returns something truthy)."""
        check = (lambda: self.query(query)) if isinstance(query, str) else (lambda: query(self))
        return wait_until(check, timeout, f"Prometheus: {query}", interval, details=self.log)

    def reload(self) -> None:
        """Re-read the configuration and rule files from the working directory."""
        self.post("/-/reload")


class Alertmanager(Server):
    name = "alertmanager"

    def alerts(self, **filters: str) -> list[dict]:
        """Alerts held by Alertmanager (API v2), each with its status (inhibitedBy, ...)."""
        return self.get("/api/v2/alerts", **filters)

    def post_alerts(self, alerts: Iterable[Mapping]) -> None:
        """Send alerts as Prometheus does: [{labels, annotations, startsAt?, endsAt?}]."""
        self.post("/api/v2/alerts", list(alerts))

    def wait_for(self, check: Callable[["Alertmanager"], Any], timeout: float = 60, interval: float = 0.5) -> Any:
        return wait_until(lambda: check(self), timeout, "Alertmanager", interval, details=self.log)


def _start(cls, argv: Callable[[int], list[str]], workdir: Path, timeout: float):
    """Start on a free port; try another if it was taken meanwhile."""
    for _ in range(3):
        server = cls(argv(port := free_port()), workdir, port)
        if server._wait_ready(timeout):
            return server
        if "address already in use" not in server.log():
            break
    server.stop(remove=False)
    raise AssertionError(f"{cls.name} exited at start-up:\n{server.log()}")


def _workdir(kind: str, files: Mapping[str, str | os.PathLike]) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=f"modelmon-{kind}-"))
    for relative, source in files.items():
        target = workdir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, os.PathLike):
            if Path(source).is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
        else:
            target.write_text(source)
    return workdir


def _copy_rule_files(directory: os.PathLike, paths: Iterable[os.PathLike],
                     edit: Callable[[str, dict], None]) -> list[Path]:
    """Copies of rule files in ``directory``, ``edit(path, group)`` applied to each group."""
    copies = []
    for path in paths:
        doc = yaml.safe_load(Path(path).read_text())
        for group in doc["groups"]:
            edit(str(path), group)
        target = Path(directory) / Path(path).name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        copies.append(target)
    return copies


def rule_files_every(directory: os.PathLike, paths: Iterable[os.PathLike], interval: str | None = None) -> list[Path]:
    """Copies of rule files in ``directory`` whose groups evaluate every ``interval`` (None:
    no ``interval`` key, so the configuration's evaluation_interval). Only for assertions
    that do not depend on the shipped intervals: a rule that counts its group's 2-minute steps
    (``sum_over_time(...rate4m[59m]) * 120``) records about 120 times its value at 1 s, its
    ratios (shares, PSI) unchanged."""
    def edit(path: str, group: dict) -> None:
        group.pop("interval", None)
        if interval is not None:
            group["interval"] = interval
    return _copy_rule_files(directory, paths, edit)


SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|[smhdwy])"


def seconds(duration: str) -> float:
    """A Prometheus duration ("15s", "4m", "1h30m") in seconds."""
    if not re.fullmatch(f"(?:{_DURATION_PART})+", str(duration)):
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(float(n) * SECONDS[unit] for n, unit in re.findall(_DURATION_PART, str(duration)))


def rule_files_at_most(directory: os.PathLike, paths: Iterable[os.PathLike], longest: str = "1m") -> list[Path]:
    """Copies of rule files in ``directory`` whose groups slower than ``longest`` evaluate
    every ``longest``, except those that read their own samples over a range or offset (the
    feature and prediction 1h groups, whose windows count their own 2-minute steps): they, and
    every rule, stay as shipped. For the groups that record constants (the training shares) or
    read other groups' samples (the 1d windows), whose values do not depend on their own
    interval: their first evaluation comes within ``longest`` of Prometheus' start, not within 4m."""
    limit = seconds(longest)

    def reads_itself(group: dict) -> bool:
        own = {rule["record"] for rule in group["rules"] if "record" in rule}
        return any(re.search(rf"(?<![\w:]){re.escape(name)}(\{{[^}}]*\}})?\s*(\[|offset\b)", str(rule["expr"]))
                   for rule in group["rules"] for name in own)

    def edit(path: str, group: dict) -> None:
        if "interval" in group and seconds(group["interval"]) > limit and not reads_itself(group):
            group["interval"] = longest
    return _copy_rule_files(directory, paths, edit)


def start_prometheus(config: str | os.PathLike | Mapping, rule_files: Iterable[os.PathLike] = (), *,
                     files: Mapping[str, str | os.PathLike] | None = None, args: Iterable[str] = (),
                     timeout: float = 60, line: str = CURRENT) -> Prometheus:
    """Start Prometheus with this configuration (text, path or mapping).

    Rule files are copied to ``rules/`` next to the configuration, so
    ``rule_files: [rules/*.yml]`` finds them; ``files`` maps other relative paths to
    text or to a file or directory to copy (``targets/`` for file_sd, ...).
    """
    binary_path = binary("prometheus", line)
    layout = {"prometheus.yml": _config_text(config), **(files or {})}
    layout.update({f"rules/{Path(p).name}": Path(p) for p in rule_files})
    workdir = _workdir("prometheus", layout)
    return _start(Prometheus, lambda port: [
        binary_path,
        "--config.file=prometheus.yml",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *args,
    ], workdir, timeout)


def start_alertmanager(config: str | os.PathLike | Mapping, templates: Iterable[os.PathLike] = (), *,
                       files: Mapping[str, str | os.PathLike] | None = None, args: Iterable[str] = (),
                       timeout: float = 60, line: str = CURRENT) -> Alertmanager:
    """Start a single Alertmanager (no cluster) with this configuration.

    Templates are copied to ``templates/`` next to the configuration, where
    ``templates: [templates/*.tmpl]`` finds them; ``files`` as for Prometheus.
    """
    binary_path = binary("alertmanager", line)
    layout = {"alertmanager.yml": _config_text(config), **(files or {})}
    layout.update({f"templates/{Path(p).name}": Path(p) for p in templates})
    workdir = _workdir("alertmanager", layout)
    return _start(Alertmanager, lambda port: [
        binary_path,
        "--config.file=alertmanager.yml",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        *args,
    ], workdir, timeout)


@dataclass
class Delivery:
    """One request a webhook receiver got."""

    path: str
    body: Any


class WebhookReceiver:
    """An HTTP server on loopback recording every POSTed JSON body."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.path, body))
                # "ok", as Slack's incoming webhooks answer: Alertmanager 0.3x's Slack
                # notifier counts any other body as a failure (0.25 looks at the status only).
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.address}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def received(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def wait_for(self, match: Callable[[Delivery], bool], timeout: float = 60) -> Delivery:
        """The first delivery that matches, waiting for it if need be."""
        return wait_until(
            lambda: next((d for d in self.received() if match(d)), None), timeout, "a matching webhook delivery",
            details=lambda: "received: " + json.dumps([(d.path, d.body) for d in self.received()])[:3000],
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_webhook_receiver() -> WebhookReceiver:
    return WebhookReceiver()
