"""The demo stack without Docker: ``make demo`` (``python -m demo.stack``).

Starts the demo model service (gunicorn, 3 workers), Prometheus and Alertmanager
from the repository's own config files, and a traffic scenario; prints where to
look; Ctrl-C stops everything it started.
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import requests

from .native import CURRENT, ROOT, Elasticsearch, Process, binary, free_port, substituted_copy
from .traffic import SCENARIOS

BUILD = ROOT / "demo" / "build"


@dataclass(frozen=True)
class Ports:
    demo: int = 8000
    prometheus: int = 9090
    alertmanager: int = 9093
    alert_sink: int = 9099
    elasticsearch: int = 9200
    shipper: int = 9108
    runbooks: int = 9098

    @classmethod
    def free(cls) -> "Ports":
        return cls(*(free_port() for _ in fields(cls)))


class NativeStack:
    """The compose services that run natively here, wired as in docker-compose.yml."""

    def __init__(self, workdir: Path, ports: Ports = Ports(), *, elastic: bool = True,
                 elastic_dir: Path | None = None, line: str | None = CURRENT):
        """``elastic_dir`` (default: in ``workdir``) must be reachable by the unprivileged
        user Elasticsearch runs as when started by root. ``line``: which Prometheus and
        Alertmanager (demo.native.LINES; None: the current line if built, else Debian's)."""
        self.workdir, self.ports, self.elastic, self.line = workdir, ports, elastic, line
        self.elastic_dir = elastic_dir or workdir / "elasticsearch"
        self.processes: list[Process | Elasticsearch] = []
        self.token_file = workdir / "feedback-token"  # the demo's /feedback token, new for each stack

    def new_feedback_token(self) -> str:
        """A fresh bearer token for the demo's /feedback, in a file only this user reads."""
        token = secrets.token_hex(24)
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        os.chmod(self.token_file, 0o600)
        return token

    @property
    def addresses(self) -> dict[str, str]:
        """Compose service address -> native address."""
        p = self.ports
        return {"demo:8000": f"127.0.0.1:{p.demo}", "alertmanager:9093": f"127.0.0.1:{p.alertmanager}",
                "prometheus:9090": f"127.0.0.1:{p.prometheus}", "alert-sink:9099": f"127.0.0.1:{p.alert_sink}",
                "elasticsearch:9200": f"127.0.0.1:{p.elasticsearch}", "shipper:9108": f"127.0.0.1:{p.shipper}"}

    @property
    def links(self) -> dict[str, str]:
        """Address a browser opens on the compose stack's published port -> native address:
        the runbooks, the external label runbook_base_url of prometheus.yml."""
        return {"localhost:9098": f"127.0.0.1:{self.ports.runbooks}"}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{getattr(self.ports, service)}"

    def start(self) -> "NativeStack":
        try:
            self.launch(self.demo_service())
            self.launch(self.alert_sink())
            self.launch(self.runbooks())
            self.launch(self.alertmanager())
            self.launch(self.prometheus())
            if self.elastic:
                self.launch(Elasticsearch(self.elastic_dir, self.ports.elasticsearch))
                self.setup_elastic()
                self.launch(self.shipper())
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self, process: Process | Elasticsearch) -> None:
        """Start one more process as part of the stack (stopped with it)."""
        self.processes.append(process)
        process.start()

    def demo_service(self) -> Process:
        if not (BUILD / "model.joblib").exists():
            from .train import main as train

            train()
        metrics_dir = self.workdir / "metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        self.new_feedback_token()
        return Process(
            "demo", [sys.executable, "-m", "gunicorn", "-c", "demo/gunicorn.conf.py",
                     "-b", f"127.0.0.1:{self.ports.demo}", "demo.service:app"],
            ready_url=f"{self.url('demo')}/healthz", log=self.workdir / "logs" / "demo.log",
            env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "MODELMON_EVENTS_DIR": str(self.workdir / "events"),
                 "MODELMON_OUTCOMES": str(self.workdir / "outcomes.sqlite"),
                 "MODELMON_FEEDBACK_TOKEN_FILE": str(self.token_file)},
        )

    def alert_sink(self) -> Process:
        return Process(
            "alert-sink", [sys.executable, "-m", "demo.alert_sink", "--host", "127.0.0.1",
                           "--port", str(self.ports.alert_sink)],
            ready_url=self.url("alert_sink"), log=self.workdir / "logs" / "alert-sink.log",
        )

    def prometheus(self) -> Process:
        config = substituted_copy(ROOT / "prometheus" / "prometheus.yml", self.workdir / "prometheus",
                                  {**self.addresses, **self.links}, links=("rules", "targets"))
        return Process(
            "prometheus", [binary("prometheus", self.line), f"--config.file={config}",
                           f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                           f"--web.listen-address=127.0.0.1:{self.ports.prometheus}"],
            ready_url=f"{self.url('prometheus')}/-/ready", log=self.workdir / "logs" / "prometheus.log",
        )

    def runbooks(self) -> Process:
        """docs/runbooks/ over HTTP, where every alert's runbook_url points."""
        return Process(
            "runbooks", [sys.executable, "-m", "demo.runbooks", "--host", "127.0.0.1",
                         "--port", str(self.ports.runbooks)],
            ready_url=f"{self.url('runbooks')}/", log=self.workdir / "logs" / "runbooks.log",
        )

    def alertmanager(self) -> Process:
        config = substituted_copy(ROOT / "alertmanager" / "alertmanager.yml", self.workdir / "alertmanager",
                                  self.addresses, links=("templates",))
        return Process(
            "alertmanager", [binary("alertmanager", self.line), f"--config.file={config}",
                             f"--storage.path={self.workdir / 'alertmanager-data'}",
                             f"--web.listen-address=127.0.0.1:{self.ports.alertmanager}",
                             "--cluster.listen-address="],
            ready_url=f"{self.url('alertmanager')}/-/ready", log=self.workdir / "logs" / "alertmanager.log",
        )

    def setup_elastic(self) -> None:
        """Templates and ILM, as the compose setup service installs them (no Kibana here)."""
        subprocess.run([sys.executable, "-m", "modelmon.cli", "setup", "--es-url", self.url("elasticsearch")],
                       check=True, capture_output=True, text=True, cwd=ROOT)

    def shipper(self) -> Process:
        return Process(
            "shipper", [sys.executable, "-m", "modelmon.cli", "ship", str(self.workdir / "events"),
                        "--es-url", self.url("elasticsearch"), "--metrics-addr", "127.0.0.1",
                        "--metrics-port", str(self.ports.shipper)],
            ready_url=f"{self.url('shipper')}/metrics", log=self.workdir / "logs" / "shipper.log",
        )

    def traffic(self, scenario: str, rate: float) -> Process:
        return Process(
            "traffic", [sys.executable, "-m", "demo.traffic", scenario, "--url", self.url("demo"),
                        "--rate", str(rate)],
            ready_url=f"{self.url('demo')}/healthz", log=self.workdir / "logs" / "traffic.log",
            env={"MODELMON_FEEDBACK_TOKEN_FILE": str(self.token_file)},
        )

    def pages(self) -> dict[str, str]:
        """Where a browser sees the running Prometheus's and Alertmanager's alerts and
        queries: the web UI where the running version serves one, else the HTTP API."""
        return {**prometheus_pages(self.url("prometheus")), **alertmanager_pages(self.url("alertmanager"))}

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


EXAMPLE_QUERY = "model_feature:modelmon_feature_bin:psi_1h"
# The alerts and query pages of each kind of Prometheus web UI, tried in this order:
# 3.x's, 2.x's, and Debian's 2.x, which lacks the React UI and serves the classic one
# under /classic/ (its /alerts is a 404).
PROMETHEUS_UIS = (("/alerts", "/query", "g0.tab=table"), ("/alerts", "/graph", "g0.tab=1"),
                  ("/classic/alerts", "/classic/graph", "g0.tab=1"))
NO_UI = "built without its web UI assets"  # scripts/install-prometheus3.sh's Alertmanager placeholder page


def _opens(url: str) -> str | None:
    """The page's text if it answers 200 (after redirects), else None."""
    try:
        response = requests.get(url, timeout=10)
    except requests.RequestException:
        return None
    return response.text if response.status_code == 200 else None


def prometheus_pages(url: str, query: str = EXAMPLE_QUERY) -> dict[str, str]:
    """Alerts and query pages of the Prometheus at ``url``: the first web UI it serves (a
    build without UI assets, such as scripts/install-prometheus3.sh's, serves none; its
    pages answer 500), else the HTTP API, which every version has."""
    encoded = requests.utils.quote(query, safe="")
    for alerts, graph, tab in PROMETHEUS_UIS:
        if _opens(url + alerts) is not None and _opens(url + graph) is not None:
            return {"prometheus alerts": url + alerts,
                    "prometheus query": f"{url}{graph}?g0.expr={encoded}&{tab}"}
    return {"prometheus alerts": f"{url}/api/v1/alerts", "prometheus query": f"{url}/api/v1/query?query={encoded}"}


def alertmanager_pages(url: str) -> dict[str, str]:
    """Alertmanager's web UI if it serves one, else its API's list of alerts."""
    page = _opens(url + "/")
    return {"alertmanager alerts": url + "/" if page is not None and NO_UI not in page else f"{url}/api/v2/alerts"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.stack", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="steady")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--workdir", type=Path, default=BUILD / "stack")
    parser.add_argument("--no-elastic", action="store_true", help="metrics only: no Elasticsearch, no shipper")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the stack like Ctrl-C
    stack = NativeStack(args.workdir, elastic=not args.no_elastic, line=None).start()
    try:
        stack.launch(stack.traffic(args.scenario, args.rate))
        pages = stack.pages()
        print(f"""
modelmon demo is up ({args.scenario} traffic, {args.rate:g} requests/s); Ctrl-C stops it.
  model service   {stack.url('demo')}/metrics   (POST /predict, POST /feedback with the token in {stack.token_file})
  Prometheus      {pages['prometheus alerts']}
                  {pages['prometheus query']}
  Alertmanager    {pages['alertmanager alerts']}
  notifications   {stack.url('alert_sink')}   (where Alertmanager's receivers post)
  runbooks        {stack.url('runbooks')}/   (the alerts' runbook links, e.g. /ModelmonFeatureDrift.md)
  Elasticsearch   {stack.url('elasticsearch')}/logs-modelmon.predictions-default/_search   (--no-elastic: off)
  logs            {args.workdir / 'logs'}, prediction events in {args.workdir / 'events'}
Another scenario, in a second terminal: .venv/bin/python -m demo.traffic drift   (see demo/traffic.py)
""", flush=True)
        while not (stopped := [p.name for p in stack.processes if not p.alive()]):
            time.sleep(1)
        print(f"{', '.join(stopped)} stopped; see the logs in {args.workdir / 'logs'}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
