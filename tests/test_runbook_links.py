"""Runbook links open on the native stack (``make demo``, demo/stack.py).

Every alert's runbook_url is ``{{ $externalLabels.runbook_base_url }}/<Alert>.md``; the
native stack points that label at the runbook server it starts (demo/runbooks.py, which
serves docs/runbooks/). A real Prometheus with the stack's configuration renders the
link of an alert that goes pending, and the link answers 200 with the runbook as text.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import requests
import yaml
from servers import wait_until

from demo.stack import NativeStack, Ports

REPO = Path(__file__).resolve().parents[1]
BASE = "{{ $externalLabels.runbook_base_url }}"


@pytest.fixture
def stack(tmp_path):
    stack = NativeStack(tmp_path, Ports.free(), elastic=False)
    yield stack
    stack.stop()


def runbook_text(url: str) -> str:
    """The page at ``url``, which must open in a browser as text."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, url
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8", url
    return response.content.decode("utf-8")


@pytest.mark.timeout(180)
def test_a_rendered_runbook_url_opens_on_the_native_stack(stack):
    # Prometheus and the runbook server as make demo starts them, without the model
    # service: its target is down, so ModelmonTargetDown goes pending, annotations rendered.
    stack.launch(stack.runbooks())
    stack.launch(stack.prometheus())

    def target_down():
        alerts = requests.get(f"{stack.url('prometheus')}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "ModelmonTargetDown"]

    alert = wait_until(target_down, 120, "ModelmonTargetDown to go pending")[0]
    url = alert["annotations"]["runbook_url"]
    assert url == f"{stack.url('runbooks')}/ModelmonTargetDown.md"
    assert runbook_text(url) == (REPO / "docs" / "runbooks" / "ModelmonTargetDown.md").read_text()


def test_every_alert_links_a_runbook_the_native_stack_serves(stack):
    stack.launch(stack.runbooks())
    stack.prometheus()  # writes the configuration Prometheus would start with
    config = yaml.safe_load((stack.workdir / "prometheus" / "prometheus.yml").read_text())
    base = config["global"]["external_labels"]["runbook_base_url"]
    assert base == stack.url("runbooks")
    rules = [rule for path in sorted((REPO / "prometheus" / "rules").glob("*.alerts.yml"))
             for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]
    assert len(rules) >= 22
    for rule in rules:
        template = rule["annotations"]["runbook_url"]
        assert template.startswith(BASE + "/"), rule["alert"]
        assert runbook_text(template.replace(BASE, base)).startswith(f"# {rule['alert']}\n")
    # Only the runbooks: nothing else of the repository is served.
    assert requests.get(f"{base}/../../README.md", timeout=10).status_code == 404
