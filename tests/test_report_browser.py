"""The HTML drift report in a real browser: Debian's Chromium, headless, driven over the
DevTools protocol. The page must load without console errors or failed or external
requests, and show one rendered plot per column of the report."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websocket
from conftest import training_frame
from prometheus_client import CollectorRegistry

from modelmon import ModelMonitor, Reference
from modelmon.cli import main
from modelmon.pipeline.events import EventLog

INSTALL = "apt-get install -y chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1200,900")


def chromium() -> str:
    """Debian's Chromium; a missing browser fails the test with the install command."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail(f"Chromium is not installed: run `{INSTALL}` (Debian's package; see make deps)")


class Page:
    """One browser tab over the DevTools protocol: commands, and the events they cause."""

    def __init__(self, url: str):
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.events: list[dict] = []
        self._id = 0

    def send(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((e for e in self.events if e.get("method") == method), None)
            if found:
                return found
            self.events.append(json.loads(self.ws.recv()))
        raise AssertionError(f"no {method} within {timeout}s")

    def problems(self, page_url: str) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed and external requests."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params['args']]}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                found.append(f"log {params['entry']['level']}: {params['entry']['text']}")
            elif method == "Network.loadingFailed":
                found.append(f"failed request: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent" and params["request"]["url"] != page_url:
                found.append(f"request outside the page: {params['request']['url']}")
        return found

    def close(self) -> None:
        self.ws.close()


class Browser:
    """A headless Chromium with a fresh profile, ended by its own process id."""

    def __init__(self, profile: Path):
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (profile / "chromium.log").open("wb")
        self.process = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Chromium did not start; its log: {(profile / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def open(self, url: str) -> Page:
        """A new tab with Runtime, Log, Network and Page events on, navigated to ``url``."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as answer:
            target = json.load(answer)
        page = Page(target["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.send(f"{domain}.enable")
        page.send("Page.navigate", url=url)
        page.wait_for("Page.loadEventFired")
        return page

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    instance = Browser(tmp_path_factory.mktemp("chromium") / "profile")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def drift_report(tmp_path_factory) -> tuple[Path, dict]:
    """A report of a faithful 1.0 and a drifted 1.1, from events a real monitor logged."""
    root = tmp_path_factory.mktemp("browser")
    reference = Reference.from_data(training_frame(2000), model="house", version="1.0", prediction="price")
    reference.save(root / "reference.yaml")
    for version, shift in (("1.0", 0.0), ("1.1", 30.0)):  # half the rows 1.5 sd off: drift called with confidence
        frame = training_frame(600, seed=7 if shift else 8)
        log = EventLog(root / "events")
        monitor = ModelMonitor("house", version, reference, registry=CollectorRegistry(), events=log)
        for area, rooms, city, price in zip(frame["area"] + shift, frame["rooms"], frame["city"], frame["price"]):
            monitor.observe({"area": float(area), "rooms": float(rooms), "city": city}, float(price))
        log.close()
    assert main(["report", "--reference", str(root / "reference.yaml"), "--events", str(root / "events"),
                 "-o", str(root / "report")]) == 0
    return root / "report.html", json.loads((root / "report.json").read_text())


PLOTS = """JSON.stringify([...document.querySelectorAll("figure.plot")].map(figure => {
  const svg = figure.querySelector("svg"), box = svg.getBoundingClientRect();
  const bars = [...svg.querySelectorAll("rect.bar")].map(r => r.getBoundingClientRect());
  return {column: figure.dataset.column, svgs: figure.querySelectorAll("svg").length,
          width: box.width, height: box.height,
          bars: bars.filter(b => b.height > 0).length,
          lefts: bars.map(b => b.left),
          inside: bars.every(b => b.left >= box.left && b.right <= box.right && b.bottom <= box.bottom + 0.5)};
}))"""


def evaluate(page: Page, expression: str):
    answer = page.send("Runtime.evaluate", expression=expression, returnByValue=True)
    assert "exceptionDetails" not in answer, answer
    return answer["result"]["value"]


def test_the_report_renders_one_plot_per_column_without_errors(browser, drift_report):
    html, report = drift_report
    url = html.as_uri()
    page = browser.open(url)
    try:
        plots = json.loads(evaluate(page, PLOTS))
        assert page.problems(url) == []
        names = [c["name"] for c in report["columns"]]
        assert [p["column"] for p in plots] == names == ["area", "rooms", "city", "price"]
        for plot, column in zip(plots, report["columns"]):
            assert plot["svgs"] == 1 and plot["width"] > 300 and plot["height"] > 200, plot
            occupied = sum(b["reference"] > 0 for b in column["bins"]) + sum(b["live"] > 0 for b in column["bins"])
            assert plot["bars"] == occupied, (plot, column["name"])
            assert len(plot["lefts"]) == 2 * len(column["bins"]) and plot["inside"], plot
            assert all(b - a >= 10 for a, b in zip(plot["lefts"], plot["lefts"][1:])), plot  # side by side
        assert evaluate(page, "document.title") == "Drift report: house"
        badges = evaluate(page, "[...document.querySelectorAll('h2 .badge')].map(b => b.textContent)")
        assert badges == [c["verdict"] if c["verdict"] == "too few rows to call" else "drift" if c["drift"]
                          else "no drift" for c in report["columns"]]
        assert report["drifting"] == ["area"] and "drift" in badges and "no drift" in badges
        png = page.send("Page.captureScreenshot", format="png")["data"]
        assert len(png) > 10_000  # a page with content, not a blank one
    finally:
        page.close()


def test_the_harness_sees_console_errors_and_outside_requests(browser, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                      '<script>console.error("boom")</script><img src="http://127.0.0.1:9/x.png"></body></html>')
    page = browser.open(broken.as_uri())
    try:
        problems = page.problems(broken.as_uri())
    finally:
        page.close()
    assert any("console.error" in p and "boom" in p for p in problems), problems
    assert any("request outside the page: http://127.0.0.1:9/x.png" in p for p in problems), problems
