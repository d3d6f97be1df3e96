"""Prediction events on standard output (EventLog.stdout()), for collectors of container logs.

A real child process writes to a real pipe: 8 threads in each of 2 forked processes, rows
with long strings (lines of about 3 KB), and every line read back is one whole JSON event
with the same fields as the file log's; nothing else is written by the events. A standard
output that fails is counted at stage "log" and never raised. The Filebeat configuration
in elk/README.md is YAML that sends the lines to the shipper's data stream, which the
index template covers.
"""
from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from conftest import scrape, value
from modelmon import ModelMonitor
from modelmon.pipeline.events import DATASET, EventLog
from modelmon.pipeline.shipper import data_stream

ROOT = Path(__file__).resolve().parent.parent
ROW = {"area": 100.0, "rooms": 3.0, "city": "paris"}

CHILD = textwrap.dedent("""
    import os, sys, threading
    from modelmon import ModelMonitor, Reference
    from modelmon.pipeline.events import EventLog, Redaction
    from prometheus_client import CollectorRegistry

    reference = Reference.load(sys.argv[1])
    events = EventLog.stdout(redaction=Redaction(max_length=4000))
    print("service start-up line, not an event", flush=True)
    pid = os.fork()  # two processes sharing one standard output, as gunicorn workers do
    monitor = ModelMonitor("house", "1.0", reference, registry=CollectorRegistry(), events=events,
                           dependencies=())

    def work(t):
        for i in range(250):
            row = {"area": 100.0 + i, "rooms": 3.0, "city": "paris", "note": f"{os.getpid()}-{t}-" + "x" * 2800}
            monitor.observe(row, 300.0, prediction_id=f"{os.getpid()}-{t}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if pid:
        os.waitpid(pid, 0)
""")


def test_threads_and_processes_write_whole_lines_to_one_pipe(tmp_path, reference):
    reference_path = tmp_path / "reference.yaml"
    reference.save(reference_path)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(reference_path)], capture_output=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == "service start-up line, not an event"
    events = [json.loads(line) for line in lines[1:]]  # a torn or interleaved line would not parse
    assert len(events) == 2 * 8 * 250
    assert max(map(len, lines)) > 2800
    ids = {event["event.id"] for event in events}
    assert len(ids) == len(events)
    for event in events:
        owner = event["event.id"].rsplit("-", 1)[0]
        assert event["modelmon.inputs"]["note"].startswith(owner + "-")  # each line is one event, whole
    assert {event["event.dataset"] for event in events} == {DATASET}
    assert not list(tmp_path.glob("predictions-*")) and not (Path("-")).exists()


def test_the_lines_on_stdout_are_the_lines_of_the_file_log(tmp_path, reference, capfd):
    to_file, to_stdout = EventLog(tmp_path / "events"), EventLog.stdout()
    assert to_stdout.path is None and to_stdout.to_stdout
    for events in (to_file, to_stdout):
        monitor = ModelMonitor("house", "1.0", reference, events=events, dependencies=(),
                               registry=__import__("prometheus_client").CollectorRegistry())
        monitor.observe({**ROW, "city": "brest"}, 300.0, prediction_id="p-1", trace_id="t-1", duration=0.002)
    from_file = json.loads(to_file.path.read_text())
    from_stdout = json.loads(capfd.readouterr().out)
    assert from_file.keys() == from_stdout.keys()
    for event in (from_file, from_stdout):
        del event["@timestamp"]
    assert from_file == from_stdout
    assert from_stdout["modelmon.flags.unseen"] == ["city"]


class BrokenStdout:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_failing_stdout_is_counted_never_raised(reference, registry, monkeypatch):
    monitor = ModelMonitor("house", "1.0", reference, registry=registry, events=EventLog.stdout(), dependencies=())
    monkeypatch.setattr(sys, "stdout", BrokenStdout())
    for i in range(3):
        monitor.observe(ROW, 300.0, prediction_id=f"p{i}")
    monkeypatch.undo()
    assert value(scrape(registry), "modelmon_internal_errors_total", stage="log") == 3


def filebeat_config() -> dict:
    text = (ROOT / "elk" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    found = [yaml.safe_load(block) for block in blocks if "filebeat.inputs" in block]
    assert len(found) == 1, "one Filebeat configuration in elk/README.md"
    return found[0]


def test_the_documented_filebeat_input_sends_the_lines_to_the_shippers_data_stream():
    config = filebeat_config()
    (stream,) = config["filebeat.inputs"]
    assert stream["type"] == "filestream"
    parsers = {key: value for parser in stream["parsers"] for key, value in parser.items()}
    assert parsers["container"]["stream"] == "stdout"
    assert parsers["ndjson"]["target"] == "" and parsers["ndjson"]["overwrite_keys"] is True
    drop = [p["drop_event"] for p in stream["processors"] if "drop_event" in p]
    assert drop == [{"when": {"not": {"equals": {"event.dataset": DATASET}}}}]  # only events, not other output
    output = config["output.elasticsearch"]
    namespace = stream["fields"]["data_stream.namespace"] if "fields" in stream else "default"
    index = output["index"].replace("%{[data_stream.namespace]}", namespace)
    assert index == data_stream(namespace)
    template = json.loads((ROOT / "elk" / "elasticsearch" / "index-template.json").read_text())
    assert any(fnmatch.fnmatch(index, pattern) for pattern in template["index_patterns"])
    assert config["setup.template.enabled"] is False and config["setup.ilm.enabled"] is False  # modelmon setup's
    copy = [p["copy_fields"] for p in stream["processors"] if "copy_fields" in p]
    assert copy and copy[0]["fields"] == [{"from": "event.id", "to": "@metadata._id"}]  # idempotent, as the shipper
