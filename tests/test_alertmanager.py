"""Alertmanager configuration: amtool checks, routes of every alert, and a live run.

The live run starts the real Alertmanager with alertmanager.yml, its Slack block
uncommented and only addresses and secret-file paths substituted, and checks routing
to the team webhooks, inhibition, the Slack text from templates/modelmon.tmpl and
resolved notifications.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from servers import CURRENT, LINES, binary, seconds, start_alertmanager, start_webhook_receiver
from test_rules import alert_rules

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "alertmanager" / "alertmanager.yml"
TEMPLATES = sorted((REPO / "alertmanager" / "templates").glob("*.tmpl"))
SINK = "alert-sink:9099"  # the webhook address of the shipped configuration
RECEIVER_OF_TEAM = {"ops": "ops", "data-science": "data-science"}


def amtool(*args: str, line: str = CURRENT) -> subprocess.CompletedProcess:
    """amtool of one line: the checks run on Debian's Alertmanager 0.25 and on 0.3x."""
    return subprocess.run([binary("amtool", line), *args], capture_output=True, text=True, timeout=60)


def uncommented(text: str, *integrations: str) -> str:
    """The configuration with the commented-out blocks of these integrations enabled."""
    lines, enabling = [], False
    for line in text.splitlines():
        found = re.fullmatch(r"    # (\w+_configs:)", line)
        if found:
            enabling = found.group(1)[:-1] in integrations
        elif not line.startswith("    #   "):
            enabling = False
        lines.append(line.replace("    # ", "    ", 1) if enabling else line)
    return "\n".join(lines) + "\n"


def check_config(text: str, directory: Path, line: str) -> subprocess.CompletedProcess:
    (directory / "alertmanager.yml").write_text(text)
    shutil.copytree(CONFIG.parent / "templates", directory / "templates", dirs_exist_ok=True)
    return amtool("check-config", str(directory / "alertmanager.yml"), line=line)


@pytest.mark.parametrize("line", LINES)
def test_config_is_valid(line):
    result = amtool("check-config", str(CONFIG), line=line)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(TEMPLATES)} templates" in result.stdout


@pytest.mark.parametrize("line", LINES)
def test_slack_and_email_blocks_are_valid_and_read_secrets_from_files(tmp_path, line):
    text = uncommented(CONFIG.read_text(), "slack_configs", "email_configs")
    result = check_config(text, tmp_path, line)
    assert result.returncode == 0, result.stdout + result.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(text)["receivers"]}
    for team in RECEIVER_OF_TEAM.values():
        slack, email = receivers[team]["slack_configs"][0], receivers[team]["email_configs"][0]
        assert "api_url" not in slack and slack["api_url_file"].startswith("/run/secrets/")
        assert "auth_password" not in email and email["auth_password_file"].startswith("/run/secrets/")
        assert slack["send_resolved"] and email["send_resolved"]


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_each_alert_reaches_its_teams_receiver(rule, line):
    labels = {"alertname": rule["alert"], **rule["labels"], "model": "m", "version": "1"}
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}",
                    f"--verify.receivers={RECEIVER_OF_TEAM[rule['labels']['team']]}",
                    *(f"{k}={v}" for k, v in labels.items()), line=line)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("labels", [["alertname=Watchdog"], ["alertname=X", "team=platform", "severity=critical"]])
def test_other_alerts_reach_the_default_receiver(labels, line):
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", "--verify.receivers=default", *labels,
                    line=line)
    assert result.returncode == 0, result.stdout + result.stderr


def test_critical_alerts_notify_sooner_and_more_often_than_warnings_and_info():
    route = yaml.safe_load(CONFIG.read_text())["route"]
    for team_route in route["routes"]:
        timing = {"warning": {k: team_route.get(k, route[k]) for k in ("group_wait", "repeat_interval")}}
        for child in team_route["routes"]:
            severity = re.fullmatch(r'severity="(\w+)"', child["matchers"][0]).group(1)
            timing[severity] = {k: child[k] for k in ("group_wait", "repeat_interval")}
        for key in ("group_wait", "repeat_interval"):
            assert seconds(timing["critical"][key]) < seconds(timing["warning"][key]) < seconds(timing["info"][key])


def alert(name: str, severity: str, team: str, ends_at: str | None = None, **labels: str) -> dict:
    body = {
        "labels": {"alertname": name, "severity": severity, "team": team, "job": "modelmon", **labels},
        "annotations": {
            "summary": f"{name} on {labels.get('model')}",
            "description": f"PSI of {labels.get('feature')} is 0.42",
            "runbook_url": f"http://localhost:9098/{name}.md",  # as rendered from runbook_base_url
            "dashboard_url": f"http://localhost:3000/d/x?var-model={labels.get('model')}&var-version=1",
        },
    }
    if ends_at:
        body["endsAt"] = ends_at
    return body


def delivered(sink, path: str) -> list[tuple[str, str]]:
    """(model, severity) of every alert the webhook at this path received."""
    return [(a["labels"].get("model"), a["labels"]["severity"]) for d in sink.received(path) for a in d.body["alerts"]]


@pytest.mark.timeout(240)
def test_live_routing_inhibition_slack_text_and_resolved(tmp_path):
    with start_webhook_receiver() as sink:
        secrets = {}
        for team in ("ops", "data_science"):
            secrets[team] = tmp_path / f"slack_{team}_webhook_url"
            secrets[team].write_text(f"{sink.url}/slack/{team}")
        text = uncommented(CONFIG.read_text(), "slack_configs").replace(SINK, sink.address)
        for team, path in secrets.items():
            text = text.replace(f"/run/secrets/slack_{team}_webhook_url", str(path))
        with start_alertmanager(text, TEMPLATES) as am:
            target_down = alert("ModelmonTargetDown", "critical", "ops", model="m", version="1", instance="a:8000")
            hidden_drift = alert("ModelmonFeatureDrift", "critical", "data-science", model="m", version="1", feature="x")
            drift = alert("ModelmonFeatureDrift", "critical", "data-science", model="n", version="1", feature="x")
            drift_warning = alert("ModelmonFeatureDrift", "warning", "data-science", model="n", version="1", feature="x")
            am.post_alerts([target_down, hidden_drift, drift, drift_warning])
            posted = time.monotonic()

            def inhibition(am):
                return {(a["labels"]["alertname"], a["labels"]["model"], a["labels"]["severity"]):
                        bool(a["status"]["inhibitedBy"]) for a in am.alerts()}

            am.wait_for(lambda am: inhibition(am) == {
                ("ModelmonTargetDown", "m", "critical"): False,
                ("ModelmonFeatureDrift", "m", "critical"): True,  # its model's target is down
                ("ModelmonFeatureDrift", "n", "critical"): False,
                ("ModelmonFeatureDrift", "n", "warning"): True,  # the critical one fires
            }, timeout=30)

            ops = sink.wait_for(lambda d: d.path == "/ops", timeout=30)
            assert ops.body["receiver"] == "ops"
            assert [a["labels"]["alertname"] for a in ops.body["alerts"]] == ["ModelmonTargetDown"]
            science = sink.wait_for(lambda d: d.path == "/data-science", timeout=30)
            assert [(a["labels"]["model"], a["labels"]["severity"]) for a in science.body["alerts"]] == [
                ("n", "critical")]
            assert science.body["alerts"][0]["annotations"]["runbook_url"].endswith("ModelmonFeatureDrift.md")

            slack = sink.wait_for(lambda d: d.path == "/slack/data_science", timeout=30).body["attachments"][0]
            assert slack["title"] == "[FIRING:1] ModelmonFeatureDrift n 1"
            assert slack["text"] == (
                "CRITICAL: ModelmonFeatureDrift on n\n"
                "model: n  version: 1  feature: x\n"
                "PSI of x is 0.42\n"
                "Runbook: http://localhost:9098/ModelmonFeatureDrift.md\n"
                "Dashboard: http://localhost:3000/d/x?var-model=n&var-version=1"
            )
            time.sleep(max(0.0, posted + 35 - time.monotonic()))  # the warnings' group was due at 30s
            assert sorted(delivered(sink, "/data-science")) == [("n", "critical")]

            now = datetime.now(timezone.utc).isoformat()
            am.post_alerts([alert("ModelmonFeatureDrift", "critical", "data-science", ends_at=now, model="n",
                                  version="1", feature="x")])
            resolved = sink.wait_for(lambda d: d.path == "/data-science" and d.body["status"] == "resolved", 90)
            assert resolved.body["alerts"][0]["labels"]["model"] == "n"
            slack = sink.wait_for(lambda d: d.path == "/slack/data_science" and "RESOLVED" in str(d.body), 30)
            assert slack.body["attachments"][0]["title"] == "[RESOLVED] ModelmonFeatureDrift n 1"
            assert slack.body["attachments"][0]["text"].startswith("RESOLVED: ModelmonFeatureDrift on n\n")
