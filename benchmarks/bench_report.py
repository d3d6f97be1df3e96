"""``modelmon report`` at 100,000, 1 million and 5 million events: events/s and peak memory.

The events are written to event files as the monitor writes them (20 features, 15
numeric and 5 categorical, and a ``price`` output; about 1.2 KB a line), drawn from the
training distributions with the numeric inputs shifted by 0.2 standard deviations. Each
size runs ``modelmon report --training`` in a fresh subprocess, with its default ``--jobs``
(worker processes) and at the first size also with ``--jobs 1`` (all in one process, as
before issue 17's workers); its peak RSS is the peak of the RSS summed over the process
and its workers (psutil, sampled every 20 ms), its CPU time theirs together (``wait4``). The
event files are made once, 100,000 events a file, in ``--workdir`` (default a
temporary directory, removed at the end): 5 million events take about 6 GB, so a size
whose files would leave less than 2 GB free is skipped and said so.

Also measured in-process: parsing event lines with orjson against the standard json
module, and the whole report at the first size with orjson disabled.

With ``--elasticsearch 1000000,5000000`` the same events are indexed into a test node
(or the node at ``--es-url``) and reported from it; at the first size also with fewer
slices and with ``--jobs 1``, and the searches alone: modelmon's reader without the report, and a trivial
client that drops the responses (the node's own ceiling). The node's CPU time is taken
from its _nodes/stats around each run.

Targets (issue 17): peak RSS at most 400 MB at 1 and 5 million events; at least
60,000 events/s from event files and from Elasticsearch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.common import CATEGORIES, N_CATEGORICAL, N_NUMERIC, ROOT, table, target, training_data, write_result
from modelmon.analysis.event_source import ES_SLICES

PER_FILE = 100_000
SHIFT = 0.2  # standard deviations
RSS_TARGET_MB, RATE_TARGET = 400, 60_000
RUNNER = """
import sys, time
from modelmon.analysis import event_source
from modelmon.cli import main
for setting in sys.argv[1].split(","):
    if setting == "stdlib":
        event_source._fast_loads = None
    elif setting.startswith("page="):
        event_source.ES_PAGE = int(setting.split("=")[1])
start = time.perf_counter()
code = main(sys.argv[2:])
print("SECONDS", time.perf_counter() - start, file=sys.stderr)
sys.exit(code)
"""


def write_events(path: Path, start: int, n: int, seed: int) -> None:
    """n event lines in the monitor's shape (keys and order of EventLog's lines)."""
    rng = np.random.default_rng(seed)
    numeric = [rng.normal(i + SHIFT * (1 + i / 10), 1 + i / 10, n).tolist() for i in range(N_NUMERIC)]
    categorical = [rng.choice(CATEGORIES, n).tolist() for _ in range(N_CATEGORICAL)]
    price = rng.lognormal(12, 0.4, n).tolist()
    head = ('{"message": "prediction", "log.level": "info", "ecs.version": "8.11.0", "service.name": "bench", '
            '"service.version": "1", "event.kind": "event", "event.dataset": "modelmon.predictions", "event.id": "')
    middle = ('", "event.outcome": "success", "modelmon.model": "bench", "modelmon.version": "1", '
              '"modelmon.reference": "bbfcc8c44552", "modelmon.inputs": {')
    tail = ('"modelmon.anomalous": false, "modelmon.flags.nonfinite_prediction": false, "modelmon.flags.missing": [], '
            '"modelmon.flags.invalid": [], "modelmon.flags.unseen": [], "modelmon.flags.out_of_range": [], ')
    with open(path, "w", encoding="utf-8") as out:
        lines = []
        for r in range(n):
            inputs = ", ".join([f'"num{i}": {numeric[i][r]!r}' for i in range(N_NUMERIC)]
                               + [f'"cat{i}": "{categorical[i][r]}"' for i in range(N_CATEGORICAL)])
            lines.append(f'{head}{start + r:032x}{middle}{inputs}}}, "modelmon.outputs": {{"price": {price[r]!r}}}, '
                         f'{tail}"modelmon.prediction.value": {price[r]!r}, '
                         '"@timestamp": "2026-12-01T10:00:00.000000+00:00"}\n')
            if len(lines) == 10_000:
                out.writelines(lines)
                lines = []
        out.writelines(lines)


def prepare(workdir: Path) -> tuple[Path, Path]:
    from modelmon import Reference

    frame = training_data()
    reference = Reference.from_data(
        {c: (frame[c].to_numpy() if frame[c].dtype.kind == "f" else frame[c].to_numpy().astype(object)) for c in frame},
        model="bench", version="1", prediction="price", categorical=[f"cat{i}" for i in range(N_CATEGORICAL)])
    reference.save(workdir / "reference.yaml")
    frame.to_csv(workdir / "train.csv", index=False)
    return workdir / "reference.yaml", workdir / "train.csv"


def events_dir(workdir: Path, n: int) -> Path:
    """A directory of the first n events (symlinks to the shared files, made as needed)."""
    files = workdir / "files"
    files.mkdir(exist_ok=True)
    target_dir = workdir / f"events-{n}"
    target_dir.mkdir(exist_ok=True)
    for k in range(n // PER_FILE):
        path = files / f"predictions-{k:03d}.jsonl"
        if not path.exists():
            write_events(path.with_suffix(".tmp"), k * PER_FILE, PER_FILE, seed=k)
            path.with_suffix(".tmp").rename(path)
        link = target_dir / path.name
        if not link.exists():
            link.symlink_to(path)
    return target_dir


def tree_rss_peak(pid: int, done: threading.Event, peak: dict, every: float = 0.02) -> None:
    """Sample the RSS summed over process ``pid`` and its descendants until ``done``:
    ``peak["tree_mb"]`` its maximum, ``peak["processes"]`` the most processes at once."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not done.wait(every):
        total, count = 0, 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in tree:
            try:
                total += process.memory_info().rss
                count += 1
            except psutil.NoSuchProcess:
                pass
        peak["tree_mb"] = max(peak.get("tree_mb", 0.0), total / 2 ** 20)
        peak["processes"] = max(peak.get("processes", 0), count)


def run_report(reference: Path, training: Path, events: Path | str, out: Path, parser: str = "orjson",
               extra: tuple[str, ...] = (), jobs: int | None = None) -> dict:
    argv = [sys.executable, "-c", RUNNER, parser, "report", "--reference", str(reference), "--training",
            str(training), "--events", str(events), "-o", str(out), *extra,
            *(("--jobs", str(jobs)) if jobs else ())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "exporters"), *sys.path])}
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    done, peak = threading.Event(), {}
    sampler = threading.Thread(target=tree_rss_peak, args=(process.pid, done, peak), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        raise RuntimeError(f"report failed ({process.returncode}): {stderr[-2000:]}")
    seconds = float(stderr.split("SECONDS")[-1].split()[0])
    report = json.loads(out.with_suffix(".json").read_text())
    # wait4's usage counts the workers too (reaped by the report process): CPU summed, RSS the largest one's
    return {"wall_s": wall, "report_s": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "jobs": jobs,
            "peak_rss_mb": peak.get("tree_mb", usage.ru_maxrss / 1024), "largest_rss_mb": usage.ru_maxrss / 1024,
            "processes": peak.get("processes", 1), "summary": stdout.strip(),
            "events": report["events"]["read"], "drifting": report["drifting"],
            "too_few_to_call": report["too_few_to_call"], "sample": report["sample"]}


def parse_rates(path: Path, lines: int = 50_000) -> dict[str, float]:
    from modelmon.analysis import event_source

    with open(path, "rb") as handle:
        data = [next(handle) for _ in range(lines)]
    rates = {}
    import orjson

    for name, loads in (("json", json.loads), ("orjson", orjson.loads), ("parse_line", event_source.parse_line)):
        start = time.perf_counter()
        for line in data:
            loads(line)
        rates[name] = lines / (time.perf_counter() - start)
    return rates


ES_STREAM = "logs-modelmon.predictions-bench"


def es_cpu_seconds(client: Any) -> float:
    """CPU time of the node's process so far (its own count: _nodes/stats)."""
    nodes = client.nodes.stats(metric="process")["nodes"].values()
    return sum(node["process"]["cpu"]["total_in_millis"] for node in nodes) / 1000


def index_events(client: Any, workdir: Path, stream: str, first: int, n: int) -> float:
    """Events first ... first + n - 1 of the event files into ``stream``; the seconds it took."""
    import orjson
    from elasticsearch import helpers

    files = sorted(events_dir(workdir, -(-(first + n) // PER_FILE) * PER_FILE).glob("*.jsonl"))[first // PER_FILE:]

    def actions():
        skip, left = first % PER_FILE, n
        for file in files:
            with open(file, "rb") as handle:
                for line in handle:
                    if skip:
                        skip -= 1
                        continue
                    if left == 0:
                        return
                    left -= 1
                    yield {"_op_type": "create", "_index": stream, "_source": orjson.loads(line)}

    started = time.perf_counter()
    for ok, item in helpers.streaming_bulk(client, actions(), chunk_size=2000, raise_on_error=True):
        assert ok, item
    client.indices.refresh(index=stream)
    return time.perf_counter() - started


def searches_alone(url: str, streams: str, slices: int, decode: bool) -> dict:
    """The report's searches without the report: modelmon's reader (``decode``), or a trivial
    client (urllib3, one thread a slice) that drops each response unparsed but for the last
    hit's sort value: what the node alone serves."""
    import threading

    import orjson
    import urllib3

    from modelmon.analysis import event_source
    from modelmon.analysis.live import REPORT_FIELDS

    started, cpu = time.perf_counter(), time.process_time()
    if decode:
        with_slices = event_source.read_elasticsearch(url, None, event_source.EventStats(), streams, slices,
                                                      fields=list(REPORT_FIELDS))
        events = sum(1 for _ in with_slices)
    else:
        http = urllib3.PoolManager(maxsize=slices)
        headers = {"Content-Type": "application/json"}
        pit = orjson.loads(http.request("POST", f"{url}/{streams}/_pit?keep_alive=5m").data)["id"]
        counts = [0] * slices

        def read(i: int) -> None:
            after = None
            while True:
                body = {"pit": {"id": pit, "keep_alive": "5m"}, "size": event_source.ES_PAGE,
                        "sort": ["_shard_doc"], "track_total_hits": False, **({"search_after": after} if after else {})}
                if slices > 1:
                    body["slice"] = {"id": i, "max": slices}
                data = http.request("POST", f"{url}/_search", body=orjson.dumps(body), headers=headers).data
                hits = data.count(b'"_index":')
                counts[i] += hits
                if hits < event_source.ES_PAGE:
                    return
                at = data.rindex(b'"sort":[') + 7
                after = orjson.loads(data[at:data.index(b"]", at) + 1])

        threads = [threading.Thread(target=read, args=(i,)) for i in range(slices)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        http.request("DELETE", f"{url}/_pit", body=orjson.dumps({"id": pit}), headers=headers)
        events = sum(counts)
    return {"events": events, "report_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


def elasticsearch_runs(workdir: Path, reference: Path, training: Path, sizes: list[int], url: str | None) -> dict:
    """For each size (ascending): index the events up to it into a test node (tests/elastic.py)
    or the node at ``url``, one data stream per step (a stream that already holds its events
    is kept), then report from it with the default slices, at the first size also with 2 and
    1 slices and the searches alone. The node's CPU is measured around each run."""
    from elasticsearch import Elasticsearch

    from modelmon.pipeline.elk_setup import DEFAULT_ASSETS, install_elasticsearch

    es_node = None
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from elastic import node  # the tests' node: scripts/elasticsearch.sh, on loopback

        es_node = node()
        url = es_node.url
    try:
        client = Elasticsearch(url, request_timeout=120)
        install_elasticsearch(client, DEFAULT_ASSETS)
        runs, streams, indexed = [], [], {}
        for step, n in enumerate(sizes):
            first = sizes[step - 1] if step else 0
            stream = ES_STREAM + (str(step + 1) if step else "")
            streams.append(stream)
            have = client.count(index=stream, ignore_unavailable=True)["count"]
            if have not in (0, n - first):
                raise RuntimeError(f"{stream} holds {have:,} events, not the {n - first:,} of this step: delete it")
            if have == 0:
                indexed[n] = index_events(client, workdir, stream, first, n - first)
                print(f"Elasticsearch: events {first:,} to {n:,} indexed in {indexed[n]:.0f}s", flush=True)
            contenders: list[tuple[str, int | None]] = [("report", None)]  # (kind, --jobs)
            if step == 0:  # in turn, twice: one process against the default workers
                contenders = [("report", 1), ("report", None)] * 2 + [("reader alone", None), ("node alone", None)]
            for kind, jobs in contenders:
                es_cpu, load = es_cpu_seconds(client), os.getloadavg()[0]
                if kind == "report":
                    r = run_report(reference, training, url, workdir / "report-es", extra=("--es-index", ",".join(streams)),
                                   jobs=jobs)
                else:
                    r = searches_alone(url, ",".join(streams), ES_SLICES, decode=kind == "reader alone")
                r.update(kind=kind, slices=ES_SLICES, es_cpu_s=es_cpu_seconds(client) - es_cpu,
                         load=(load, os.getloadavg()[0]))
                runs.append(r)
                print(f"Elasticsearch, {kind}, {r['slices']} slice(s), jobs {jobs or 'default'}: {r['events']:,} "
                      f"events, {r['report_s']:.1f}s, "
                      f"{r['events'] / r['report_s']:,.0f} events/s, CPU {r['cpu_s']:.1f}s, node CPU "
                      f"{r['es_cpu_s']:.1f}s, load {load:.1f}", flush=True)
        return {"indexed_seconds": indexed, "runs": runs}
    finally:
        if es_node is not None:
            es_node.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--quick", action="store_true", help="100,000 events only")
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--workdir", type=Path, help="keep the event files here (default: a temporary directory)")
    parser.add_argument("--elasticsearch", metavar="N[,N...]", default="",
                        help="also index N events into a test node (tests/elastic.py) and report from it")
    parser.add_argument("--es-url", help="with --elasticsearch: this node instead of a fresh test node (its "
                                         f"{ES_STREAM}* streams are kept when they hold the events)")
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelmon-bench-report-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        reference, training = prepare(workdir)
        results, skipped = {}, []
        for n in sizes:
            have = len(list((workdir / "files").glob("*.jsonl"))) if (workdir / "files").exists() else 0
            need_bytes = max(n // PER_FILE - have, 0) * PER_FILE * 1250
            if shutil.disk_usage(workdir).free - need_bytes < 2 * 1024 ** 3:
                skipped.append(n)
                print(f"{n:,} events: skipped, {need_bytes / 1e9:.1f} GB of event files would leave under 2 GB free")
                continue
            started = time.perf_counter()
            events = events_dir(workdir, n)
            print(f"{n:,} events: files ready in {time.perf_counter() - started:.0f}s", flush=True)
            for jobs in (None, 1) if n == sizes[0] else (None,):
                load = os.getloadavg()[0]
                r = run_report(reference, training, events, workdir / f"report-{n}", jobs=jobs)
                r["load"] = (load, os.getloadavg()[0])
                results[(n, jobs)] = r
                print(f"{n:,} events, jobs {jobs or 'default'}: {r['report_s']:.1f}s, {n / r['report_s']:,.0f} "
                      f"events/s, peak RSS {r['peak_rss_mb']:.0f} MB ({r['processes']} processes), load "
                      f"{load:.1f}; drifting {len(r['drifting'])}", flush=True)
        first = sizes[0]
        stdlib = run_report(reference, training, events_dir(workdir, first), workdir / "report-stdlib", "stdlib",
                            jobs=1)  # the setting holds in the report process only
        rates = parse_rates(workdir / "files" / "predictions-000.jsonl")
        es_sizes = sorted(int(n) for n in args.elasticsearch.split(",")) if args.elasticsearch else []
        elastic = elasticsearch_runs(workdir, reference, training, es_sizes, args.es_url) if es_sizes else None
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    def row(name: str, r: dict) -> list:
        return [name, r["processes"], f"{r['report_s']:.1f}", f"{r['events'] / r['report_s']:,.0f}",
                f"{r['cpu_s']:.1f}", f"{r['events'] / r['cpu_s']:,.0f}", f"{r['peak_rss_mb']:.0f}",
                f"{r['largest_rss_mb']:.0f}", f"{r['sample']['rows']:,}", len(r["drifting"]),
                f"{r['load'][0]:.1f} / {r['load'][1]:.1f}" if "load" in r else ""]

    rows = [row(f"{n:,}, --jobs {jobs or 'default'}", r) for (n, jobs), r in results.items()]
    rows.append(row(f"{first:,} (json, no orjson)", stdlib))
    markdown = (table(["events", "processes", "seconds", "events/s", "CPU s", "events per CPU s",
                       "peak RSS MB (all processes)", "largest process MB", "sample rows", "drifting",
                       "load before / after"], rows)
                + "\n\nCPU s: user + system time of the report process and its workers, which a loaded machine "
                  "does not inflate as much as it does the wall time (Elasticsearch's own work is not in it). "
                  "processes: the most at once (the report, its workers, multiprocessing's resource tracker)."
                + f"\n\nParsing one event line: json {rates['json']:,.0f}/s, orjson {rates['orjson']:,.0f}/s."
                + (f" Skipped for disk space: {', '.join(f'{n:,}' for n in skipped)}." if skipped else ""))
    if elastic:
        es_rows = [[f"{r['kind']}, {r['slices']} slice(s)"
                    + (f", --jobs {r['jobs'] or 'default'}, {r['processes']} processes" if r["kind"] == "report" else ""),
                    f"{r['events']:,}", f"{r['report_s']:.1f}",
                    f"{r['events'] / r['report_s']:,.0f}", f"{r['cpu_s']:.1f}", f"{r['es_cpu_s']:.1f}",
                    f"{r['events'] / (r['cpu_s'] + r['es_cpu_s']):,.0f}",
                    f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "",
                    f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"] for r in elastic["runs"]]
        markdown += ("\n\nFrom Elasticsearch (the tests' node, 512 MB heap, on the same cores):\n\n"
                     + table(["run", "events", "seconds", "events/s", "CPU s", "node CPU s",
                              "events per CPU s (both)", "peak RSS MB", "load before / after"], es_rows)
                     + "\n\nnode CPU s: the node's own count (_nodes/stats) over the run. *reader alone*: "
                       "modelmon's reader in-process without the report; *node alone*: the same searches from a "
                       "trivial client that drops each response unparsed (what the node serves by itself).")
    targets = []
    results_default = {n: r for (n, jobs), r in results.items() if jobs is None}
    for n in (1_000_000, 5_000_000):
        if n in results_default:
            rss = results_default[n]["peak_rss_mb"]
            targets.append(target(f"peak RSS at {n:,} events <= {RSS_TARGET_MB} MB", f"{rss:.0f} MB",
                                  rss <= RSS_TARGET_MB))
        elif n in sizes:
            targets.append(target(f"peak RSS at {n:,} events <= {RSS_TARGET_MB} MB", "not run (disk)", None))
    largest = max(results_default)
    rate = largest / results_default[largest]["report_s"]
    targets.append(target(f"events/s from event files >= {RATE_TARGET:,}", f"{rate:,.0f} at {largest:,}",
                          rate >= RATE_TARGET if largest >= 1_000_000 else None))
    for r in elastic["runs"] if elastic else []:
        if r["kind"] == "report" and r["jobs"] is None:
            rate = r["events"] / r["report_s"]
            targets.append(target(f"events/s from Elasticsearch >= {RATE_TARGET:,}", f"{rate:,.0f} at {r['events']:,}",
                                  rate >= RATE_TARGET))
            if r["events"] in (1_000_000, 5_000_000):
                targets.append(target(f"peak RSS from Elasticsearch at {r['events']:,} events <= {RSS_TARGET_MB} MB",
                                      f"{r['peak_rss_mb']:.0f} MB", r["peak_rss_mb"] <= RSS_TARGET_MB))
    data = {"results": {f"{n}, jobs {jobs or 'default'}": r for (n, jobs), r in results.items()}, "stdlib_json": stdlib, "parse_rates": rates,
            "skipped": skipped, "elasticsearch": elastic}
    write_result(args, "modelmon report: events/s and peak memory", markdown, targets, data)


if __name__ == "__main__":
    main()
