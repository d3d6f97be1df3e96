"""Log pipeline: rows observed with an event log, shipped into a local Elasticsearch.

``ModelMonitor.observe`` with ``EventLog(sample_rate=1.0)`` writes one prediction event
per row (the 20-feature rows of the other benchmarks) while ``modelmon ship`` runs as its
own process, as beside a service. Measured: the producer's cost per row, events per
second from the first ``observe`` until Elasticsearch has acknowledged the last event,
the shipper's peak RSS (VmHWM), and that every row became exactly one document.
Elasticsearch, the producer and the shipper share the machine's two cores.

Elasticsearch: ``$ELASTICSEARCH_URL`` if set, else a node started by ``scripts/elasticsearch.sh``
(installed by ``make deps``).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import (
    ROOT, arguments, free_port, mib, proc_status, rows_of, table, target, training_data, write_result,
)
from modelmon import ModelMonitor, Reference
from modelmon.pipeline.events import EventLog

SCRIPT = ROOT / "scripts" / "elasticsearch.sh"


def acknowledged(port: int) -> float:
    """Events the shipper has had acknowledged (indexed or already there)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    return samples["modelmon_shipper_documents_indexed_total"] + samples["modelmon_shipper_documents_duplicate_total"]


def start_shipper(events: Path, url: str, namespace: str, port: int, log: Path) -> subprocess.Popen:
    """``modelmon ship`` in its own process, its output to ``log``; returns once its metrics answer."""
    command = [sys.executable, "-m", "modelmon.cli", "ship", str(events), "--namespace", namespace,
               "--es-url", url, "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"]
    with open(log, "wb") as out:
        shipper = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            acknowledged(port)
            return shipper
        except OSError:
            if shipper.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"modelmon ship did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)


def run(url: str, count: int, work: Path) -> dict:
    from elasticsearch import Elasticsearch

    from modelmon.pipeline.elk_setup import DEFAULT_ASSETS, install_elasticsearch
    from modelmon.pipeline.shipper import data_stream

    es = Elasticsearch(url, request_timeout=60)
    install_elasticsearch(es, DEFAULT_ASSETS)
    namespace = f"bench{int(time.time())}"
    reference = training_data()
    ref = Reference.from_data(reference, model="m", version="1", prediction="price")
    monitor = ModelMonitor("m", "1", ref, registry=CollectorRegistry(), events=EventLog(work / "events"))
    rows, predictions = rows_of(training_data(rows=2000, seed=17))
    port = free_port()
    shipper = start_shipper(work / "events", url, namespace, port, work / "shipper.log")
    try:
        start = time.perf_counter()
        for i in range(count):
            monitor.observe(rows[i % 2000], predictions[i % 2000], prediction_id=f"{namespace}-{i}")
        produced = time.perf_counter() - start
        deadline = time.monotonic() + 600
        while acknowledged(port) < count:
            if shipper.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the shipper stopped short of {count} events: "
                                   f"{(work / 'shipper.log').read_text()[-2000:]}")
            time.sleep(0.05)
        shipped = time.perf_counter() - start
        peak = proc_status(shipper.pid)["VmHWM"]
    finally:
        shipper.send_signal(signal.SIGTERM)
        shipper.wait(30)
    es.indices.refresh(index=data_stream(namespace))
    stored = es.count(index=data_stream(namespace))["count"]
    size = sum(p.stat().st_size for p in (work / "events").glob("predictions-*"))
    return {"events": count, "bytes": size, "produce_seconds": produced, "seconds": shipped,
            "peak_rss_bytes": peak, "stored": stored}


def main() -> None:
    args = arguments(__doc__)
    count = 20_000 if args.quick else 100_000
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    url, node = os.environ.get("ELASTICSEARCH_URL"), None
    if not url:
        node = Path(tempfile.mkdtemp(prefix="bench-es-"))  # the script opens it to Elasticsearch's user
        started = subprocess.run([str(SCRIPT), "start", str(node)], capture_output=True, text=True)
        if started.returncode:
            sys.exit(f"no Elasticsearch: {started.stderr.strip().splitlines()[-1]}")
        url = started.stdout.strip()
    try:
        r = run(url, count, work)
    finally:
        if node is not None:
            subprocess.run([str(SCRIPT), "stop", str(node)], check=False)
            shutil.rmtree(node, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    rate = r["events"] / r["seconds"]
    markdown = (
        table(["events", "bytes per event", "observe + event, us per row", "observe to document, events/s",
               "shipper peak RSS", "documents"],
              [[f"{count:,}", round(r["bytes"] / count), f"{r['produce_seconds'] / count * 1e6:.0f}", f"{rate:,.0f}",
                f"{mib(r['peak_rss_bytes']):.0f} MiB", f"{r['stored']:,}"]])
        + f"\n\nThe producer finished after {r['produce_seconds']:.1f} s, the last event was acknowledged "
        f"after {r['seconds']:.1f} s. Elasticsearch ran with a 512 MB heap on the same two cores."
    )
    targets = [target("every observed row is one document in Elasticsearch", f"{r['stored']:,} of {count:,}",
                      r["stored"] == count)]
    write_result(args, "Log pipeline", markdown, targets, r)


if __name__ == "__main__":
    main()
