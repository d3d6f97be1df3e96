"""Shipper throughput and memory: prediction events from files into a local Elasticsearch.

The events are the Ames house-prices rows (79 features, the demo model's input) written
by ``modelmon.events.EventLog``, so each line has the producer's exact format and size.
A warm-up batch creates the data stream first; then ``modelmon ship`` runs as its own
process until Elasticsearch has acknowledged every event. Measured: events per second
from the shipper's start to the last acknowledgement, and the shipper's peak RSS
(VmHWM). Elasticsearch (512 MB heap) shares the machine's cores with the shipper.

Elasticsearch: ``$ELASTICSEARCH_URL`` if set, else a node started by
``scripts/elasticsearch.sh`` (install it with ``make deps``).

Run: ``python -m benchmarks.bench_shipper [--out FILE] [--quick]``
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from elasticsearch import Elasticsearch
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import ROOT, arguments, mib, proc_status, table, target, write_result
from modelmon.elk_setup import DEFAULT_ASSETS, install_elasticsearch
from modelmon.events import EventLog
from modelmon.shipper import Shipper, ShipperConfig

SCRIPT = ROOT / "scripts" / "elasticsearch.sh"
TARGET_RATE = 10_000  # events per second
TARGET_RSS = 200  # MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cell(text: str) -> float | str | None:
    if text == "NA":
        return None
    return float(text) if text.replace(".", "", 1).isdigit() else text


def ames_rows() -> list[tuple[dict, float]]:
    """(features, price) of every training row, missing cells as None."""
    with open(ROOT / "demo" / "data" / "train.csv", newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            price = float(row.pop("SalePrice"))
            row.pop("Id")
            rows.append(({k: cell(v) for k, v in row.items()}, price))
    return rows


def write(directory: Path, count: int, run: str) -> float:
    """Write ``count`` events; returns the seconds the producer took."""
    rows = ames_rows()
    log = EventLog(directory, labels={"region": "eu"})
    start = time.perf_counter()
    for i in range(count):
        features, price = rows[i % len(rows)]
        missing = [k for k, v in features.items() if v is None]
        log.write(
            model="house-price", version="1.4.0", reference="f254665e2fe1", inputs=features,
            outputs={"SalePrice": price}, flags={"missing": missing, "invalid": [], "unseen": [], "out_of_range": []},
            nonfinite_prediction=False, prediction_id=f"{run}-{i}", duration=0.002,
        )  # fmt: skip
    log.close()
    return time.perf_counter() - start


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ship(events: Path, state: Path, namespace: str, url: str, count: int) -> tuple[float, int, float]:
    """Run ``modelmon ship`` until ``count`` events are acknowledged: (seconds, peak RSS bytes,
    CPU seconds of the shipper)."""
    port = free_port()
    command = [
        sys.executable, "-m", "modelmon.cli", "ship", str(events), "--namespace", namespace, "--state-dir",
        str(state), "--es-url", url, "--metrics-port", str(port), "--metrics-addr", "127.0.0.1",
    ]  # fmt: skip
    start = time.perf_counter()
    with open(state.parent / "shipper.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            time.sleep(0.05)
            if process.poll() is not None:
                raise RuntimeError(f"modelmon ship exited with {process.returncode}: see {log.name}")
            try:
                metrics = scrape(port)
            except OSError:
                continue
            if metrics["modelmon_shipper_documents_indexed_total"] + metrics[
                "modelmon_shipper_documents_duplicate_total"
            ] >= count:
                elapsed = time.perf_counter() - start
                return elapsed, proc_status(process.pid)["VmHWM"], cpu_seconds(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def unindexed_inputs(es: Elasticsearch, namespace: str) -> None:
    """The templates of modelmon setup plus what elk/README.md suggests for
    ``modelmon-predictions@custom`` where only the flags matter: inputs kept in _source only."""
    mapping = {"properties": {"modelmon": {"properties": {"inputs": {"type": "flattened", "index": False}}}}}
    es.cluster.put_component_template(name="bench-unindexed-inputs", template={"mappings": mapping})
    es.indices.put_index_template(
        name=f"bench-{namespace}", index_patterns=[f"logs-modelmon.predictions-{namespace}"], data_stream={},
        priority=700,
        composed_of=["modelmon-predictions@settings", "modelmon-predictions@mappings", "bench-unindexed-inputs"],
    )


def main() -> None:
    args = arguments(__doc__)
    count, warmup = (20_000, 5000) if args.quick else (100_000, 20_000)
    work = Path(tempfile.mkdtemp(prefix="bench-shipper-"))
    url, node = os.environ.get("ELASTICSEARCH_URL"), None
    if not url:
        node = Path(tempfile.mkdtemp(prefix="bench-es-"))
        started = subprocess.run([str(SCRIPT), "start", str(node)], check=True, capture_output=True, text=True)
        url = started.stdout.strip()
    rows, data = [], {}
    try:
        es = Elasticsearch(url, request_timeout=60)
        install_elasticsearch(es, DEFAULT_ASSETS)
        write(work / "warmup", warmup, "warmup")
        produce = write(work / "events", count, "bench")
        size = sum(p.stat().st_size for p in (work / "events").glob("predictions-*"))
        mappings = (("inputs flattened (default)", "default"), ("inputs in _source only (@custom)", "unindexed"))
        for label, key in mappings:
            namespace = f"bench{key}{int(time.time())}"
            if key == "unindexed":
                unindexed_inputs(es, namespace)
            # A warm-up into the same data stream: created, and the JVM's code compiled.
            config = ShipperConfig(work / "warmup", namespace=namespace, state_dir=work / f"warm-{key}")
            shipper = Shipper(es, config)
            while shipper.run_once():
                pass
            seconds, peak, cpu = ship(work / "events", work / f"state-{key}", namespace, url, count)
            es.indices.refresh(index=shipper.config.data_stream)
            stored = es.count(index=shipper.config.data_stream)["count"]
            rate = count / seconds
            data[key] = {"seconds": seconds, "events_per_second": rate, "peak_rss_bytes": peak, "stored": stored,
                         "shipper_cpu_seconds": cpu}  # fmt: skip
            rows.append([
                label, count, f"{seconds:.1f} s", f"{rate:,.0f}", f"{size / seconds / 1e6:.1f}",
                f"{cpu / count * 1e6:.0f} us", f"{mib(peak):.0f} MiB", f"{stored:,} of {count + warmup:,}",
            ])  # fmt: skip
    finally:
        if node is not None:
            subprocess.run([str(SCRIPT), "stop", str(node)], check=False)
            shutil.rmtree(node, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    markdown = table(
        ["mapping", "events", "shipped in", "events/s", "MB/s", "shipper CPU per event", "shipper peak RSS",
         "in Elasticsearch"],
        rows,
    ) + (
        f"\n\n{size / count:.0f} bytes per event (79 Ames features); the producer (EventLog) wrote them at "
        f"{produce / count * 1e6:.0f} us per event. The shipper's CPU per event (start-up included) "
        "bounds what it can ship on one core; the rest of the time is Elasticsearch's."
    )
    default = data["default"]
    rate, peak = default["events_per_second"], max(d["peak_rss_bytes"] for d in data.values())
    write_result(
        args,
        "Event shipper",
        markdown,
        [
            target(
                f"shipping >= {TARGET_RATE:,} events/s", f"{rate:,.0f}/s", None if args.quick else rate >= TARGET_RATE
            ),
            target(f"shipper peak RSS < {TARGET_RSS} MiB", f"{mib(peak):.0f} MiB", mib(peak) < TARGET_RSS),
            target(
                "every event stored once",
                ", ".join(f"{d['stored']:,}" for d in data.values()),
                all(d["stored"] == count + warmup for d in data.values()),
            ),
        ],
        {"events": count, "bytes": size, **data},
    )


if __name__ == "__main__":
    main()
