"""Rule cost at fleet scale (issue 13): the project's rule files on a TSDB of M models.

    python -m benchmarks.bench_rules --models 10 100 [--rules-rev REV] [--prometheus 3|2] [--compare [--steady]]

A Go program (``benchmarks/tsdbgen``, built with ``go build`` from the Go module proxy,
github.com/prometheus/prometheus at the version of the cached Prometheus 3.16) writes 26 h
of synthetic modelmon series scraped every 15 s straight into Prometheus blocks: M models
x 40 numeric features x 14 bins x 4 instances, bin counters growing by Poisson draws
around the reference shares, value summaries by sign, reference gauges, predictions,
latency histograms, outcomes, model info. The blocks end at the current time and the same
program then serves the series' continuation, which a Prometheus started on the TSDB
scrapes every 15 s (one target per instance), so rules read steady data ending "now", as in
production (scraping is part of the load). The per-feature families get a shorter history
(the longest window over which a rule reads them directly plus an hour, at least 2 h; 26 h
with --compare) when the rules only read them over short windows; the rules' own short-window
series that long windows are built from are backfilled at their groups' steps over the 26 h, at
their steady values (only their number and spacing matter for the cost).

Then, from /api/v1/rules after several evaluations of every group: per group, the median
evaluation time over its interval (the share of one core it keeps busy; their sum is the
rule set's), and the costliest rules, each run once with ``stats=all`` for the samples it
touches. ``--compare`` (full raw history only) evaluates today's definitions of the 1h and
1d increases and means next to the short-window construction, on the same data, and
reports the largest (and root-mean-square) relative difference, at the same minute and
aligned: today's definition 2 minutes earlier, the construction's lag (its 4-minute edges
are centred 2 minutes back). The Poisson draws of single minutes at the windows' edges are
noise that the two estimators weigh differently; ``--steady`` generates counters that grow by
exactly their mean every scrape, which isolates the construction's own error. The TSDB is
deleted afterwards (--keep keeps it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from benchmarks.common import ROOT, free_port, table, target, write_result

GEN_DIR = ROOT / "benchmarks" / "tsdbgen"
PROMETHEUS = {"3": Path("/var/cache/modelmon/bin/prometheus-3.16.0/prometheus"), "2": Path("/usr/bin/prometheus")}
FEATURES, BINS, INSTANCES = 40, 14, 4
GOAL_MODELS, GOAL_CORE_SHARE = 100, 0.25
# Families with one series per feature (and bin): the ones whose history is worth shortening.
BIG = r"modelmon_(?:feature_bin_total|feature_value_(?:sum|count)|reference_bin_ratio|reference_mean|reference_stddev)"
# Recorded short-window series tsdbgen backfills (with -recorded); they must be the rule files'.
BACKFILLED = [
    "model_feature_bin:modelmon_feature_bin:rate4m",
    "model_feature:modelmon_feature_value_sum:rate4m",
    "model_feature:modelmon_feature_value_count:rate4m",
    "model_output_bin:modelmon_prediction_bin:rate4m",
    "model_output:modelmon_prediction_value_sum:rate4m",
    "model_output:modelmon_prediction_value_count:rate4m",
]
SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def duration(text: str) -> float:
    """A Prometheus duration ("4m", "23h59m59s999ms") in seconds."""
    return sum(int(n) * SECONDS[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", text))


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def rule_files(rev: str | None, into: Path, directory: Path | None = None) -> list[Path]:
    """The rule files of the working tree (or ``directory``), or of a git revision, copied into ``into``."""
    into.mkdir(parents=True)
    if rev is None:
        for path in sorted((directory or ROOT / "prometheus" / "rules").glob("*.yml")):
            shutil.copy(path, into / path.name)
    else:
        names = subprocess.run(["git", "ls-tree", "--name-only", rev, "prometheus/rules/"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
        for name in names:
            if name.endswith(".yml"):
                text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True,
                                      text=True).stdout
                (into / Path(name).name).write_text(text)
    return sorted(into.glob("*.yml"))


def rules_of(paths: list[Path]) -> list[dict]:
    return [rule for path in paths for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def big_window(paths: list[Path]) -> float:
    """The longest range (plus offset) over which any rule reads a per-feature family directly."""
    longest = 0.0
    for rule in rules_of(paths):
        for _, rng, offset in re.findall(BIG + r"(\{[^}]*\})?\[(\w+)\](?:\s*offset\s+(\w+))?", rule["expr"]):
            longest = max(longest, duration(rng) + (duration(offset) if offset else 0))
    return longest


def reads_backfilled(paths: list[Path]) -> list[str]:
    recorded = {rule["record"] for rule in rules_of(paths) if "record" in rule}
    return [name for name in BACKFILLED if name in recorded]


def build_generator(work: Path) -> Path:
    binary = work / "tsdbgen"
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    if shutil.which("go") is None and Path("/usr/local/go/bin/go").exists():
        env["PATH"] = env["PATH"] + ":/usr/local/go/bin"
    subprocess.run(["nice", "go", "build", "-o", str(binary), "."], cwd=GEN_DIR, env=env, check=True)
    return binary


def get(url: str, timeout: float = 900) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def query(base: str, expr: str, at: float | None = None, stats: bool = False, timeout: float = 900) -> dict:
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    if stats:
        params["stats"] = "all"
    return get(f"{base}/api/v1/query?{urllib.parse.urlencode(params)}", timeout)["data"]


class Run:
    """A generator serving the continuation of its TSDB, and a Prometheus on it."""

    def __init__(self, work: Path, generator: Path, models: int, rules: list[Path], line: str, big_history: float,
                 steady: bool = False):
        self.work, self.models, self.line, self.rules = work, models, line, rules
        self.tsdb = work / "tsdb"
        port, self.prom_port = free_port(), free_port()
        command = ["nice", str(generator), "-out", str(self.tsdb), "-models", str(models), "-features", str(FEATURES),
                   "-instances", str(INSTANCES), "-history", "26h", "-big-history", f"{int(big_history)}s",
                   "-serve", f"127.0.0.1:{port}"]
        if reads_backfilled(rules):
            command.append("-recorded")
        if steady:
            command.append("-steady")
        log("generating:", " ".join(command[1:]))
        start = time.monotonic()
        self.gen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.prom = None
        try:
            self._start(command, start, port)
        except BaseException:
            self.close()
            raise

    def _start(self, command: list[str], start: float, port: int) -> None:
        line, models, work, rules = self.line, self.models, self.work, self.rules
        self.series = self.samples = 0
        for out in self.gen.stdout:
            log("  tsdbgen:", out.rstrip())
            key, _, value = out.partition(" ")
            if key == "series":
                self.series = int(value)
            elif key == "samples":
                self.samples = int(value)
            elif key == "listening":
                break
        else:
            raise RuntimeError(f"tsdbgen exited with {self.gen.wait()}")
        self.generate_seconds = time.monotonic() - start
        self.tsdb_bytes = sum(p.stat().st_size for p in self.tsdb.rglob("*") if p.is_file())
        targets = [f"model-{m:03d}-{i}:8000" for m in range(models) for i in range(INSTANCES)]
        config = {
            "global": {"scrape_interval": "15s", "evaluation_interval": "15s", "scrape_timeout": "10s",
                       "external_labels": {"grafana_url": "http://localhost:3000",
                                           "runbook_base_url": "http://localhost:9098"}},
            "rule_files": [str(path) for path in rules],
            "scrape_configs": [{
                "job_name": "modelmon", "static_configs": [{"targets": targets}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__address__"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"127.0.0.1:{port}"},
                ],
            }],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.base = f"http://127.0.0.1:{self.prom_port}"
        self.prom_log = open(work / "prometheus.log", "w")
        self.prom = subprocess.Popen(
            ["nice", str(PROMETHEUS[line]), f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.tsdb}", "--storage.tsdb.retention.time=30d",
             # no compaction of the backfilled 2 h blocks while the rules are measured
             "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--query.timeout=15m",
             "--query.max-samples=2000000000"],
            stdout=self.prom_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/-/ready", timeout=5).read()
                break
            except OSError:
                if self.prom.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Prometheus did not start: see {work / 'prometheus.log'}")
                time.sleep(1)
        log(f"Prometheus {line} ready on {self.base} after {time.monotonic() - start:.0f} s")

    def version(self) -> str:
        try:
            return get(f"{self.base}/api/v1/status/buildinfo", 10)["data"]["version"]
        except OSError:
            return "?"

    def close(self) -> None:
        for proc in (self.prom, self.gen):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if getattr(self, "prom_log", None):
            self.prom_log.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROBE = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"


def contention() -> float:
    """Wall time over CPU time of a 0.2 s busy loop at Prometheus's nice level: how much longer
    than its CPU time a CPU-bound evaluation takes on the shared machine right now (1 = idle)."""
    started = time.monotonic()
    subprocess.run(["nice", sys.executable, "-c", PROBE], check=True)
    return (time.monotonic() - started - 0.03) / 0.2  # ~0.03 s of interpreter start-up


def observe(run: Run, settle: float, evaluations: int) -> dict:
    """Every group's evaluations seen on /api/v1/rules over at least ``settle`` seconds; and
    Prometheus's CPU time over them, and the machine's contention, probed every ~20 s."""
    seen: dict[str, dict] = {}
    start = time.monotonic()
    cpu0, probes, loads, probed = cpu_seconds(run.prom.pid), [], [], 0.0
    while True:
        if time.monotonic() - probed > 20:
            probes.append(contention())
            loads.append(os.getloadavg()[0])
            probed = time.monotonic()
        for group in get(f"{run.base}/api/v1/rules", 60)["data"]["groups"]:
            g = seen.setdefault(group["name"], {"interval": group["interval"], "file": Path(group["file"]).name,
                                                "evals": {}, "rules": {}})
            stamp = group.get("lastEvaluation", "")
            if stamp.startswith("0001") or stamp in g["evals"]:
                continue
            g["evals"][stamp] = group["evaluationTime"]
            for i, rule in enumerate(group["rules"]):
                r = g["rules"].setdefault(i, {"name": rule["name"], "query": rule["query"], "times": [], "errors": set()})
                r["times"].append(rule["evaluationTime"])
                if rule.get("lastError"):
                    r["errors"].add(rule["lastError"][:200])
        elapsed = time.monotonic() - start
        done = all(len(g["evals"]) >= (evaluations if g["interval"] <= 60 else min(2, evaluations))
                   for g in seen.values())
        if seen and elapsed >= settle and done or elapsed > settle + 900:
            run.prom_cpu = (cpu_seconds(run.prom.pid) - cpu0) / (time.monotonic() - start)
            run.contention = statistics.median(probes)
            run.loads = (min(loads), max(loads))
            return seen
        time.sleep(5)


def summarise(seen: dict) -> tuple[list[dict], list[dict]]:
    groups, rules = [], []
    for name, g in seen.items():
        times = list(g["evals"].values())
        warm = times[1:] if len(times) > 1 else times  # the first evaluation warms caches
        median = statistics.median(warm)
        groups.append({"group": name, "file": g["file"], "interval": g["interval"], "evaluations": len(times),
                       "median_s": median, "max_s": max(warm), "share": median / g["interval"]})
        for r in g["rules"].values():
            t = r["times"][1:] if len(r["times"]) > 1 else r["times"]
            rules.append({"group": name, "rule": r["name"], "query": r["query"], "median_s": statistics.median(t),
                          "per_second": statistics.median(t) / g["interval"], "errors": sorted(r["errors"])})
    groups.sort(key=lambda g: -g["share"])
    rules.sort(key=lambda r: -r["per_second"])
    return groups, rules


def costliest(run: Run, rules: list[dict], count: int) -> list[dict]:
    out = []
    for r in rules[:count]:
        try:
            stats = query(run.base, r["query"], stats=True)["stats"]
            samples = stats["samples"]
            r = dict(r, samples=samples.get("totalQueryableSamples"), peak=samples.get("peakSamples"),
                     exec_s=stats["timings"]["execTotalTime"])
        except (OSError, KeyError) as error:
            r = dict(r, samples=None, peak=None, exec_s=None, stats_error=str(error))
        out.append(r)
    return out


# Today's definitions (increase() of the raw series over the window, summed over
# instances) against the rule files' construction (every 2 minutes, the 4m rate summed over
# instances; the window's steps summed, times 120 s), evaluated by Prometheus on the same
# data at the same minute: the subquery's steps are the recording rule's.
def _old(metric: str, window: str, selector: str = "") -> str:
    return f"sum without(instance, pod, pid) (increase({metric}{selector}[{window}]))"


def _old_aligned(metric: str, window: str, selector: str = "") -> str:
    return f"sum without(instance, pod, pid) (increase({metric}{selector}[{window}] offset {LAG}))"


LAG = "2m"  # the construction's 4-minute edges are centred 2 minutes before the evaluation
NEW_RANGES = {"1h": "59m", "1d": "23h59m59s999ms"}


def _new(metric: str, window: str, selector: str = "") -> str:
    inner = f"sum without(instance, pod, pid) (rate({metric}{selector}[4m]))"
    return f"sum_over_time(({inner})[{NEW_RANGES[window]}:2m]) * 120"


def compare(run: Run) -> dict:
    """Largest relative differences between today's 1h/1d values and the construction's."""
    at = (time.time() // 120 - 1) * 120  # a step of the 1h groups: the hour's 30 steps end there
    result = {}
    for kind, column in (("feature", "feature"), ("prediction", "output")):
        ref_metric = "modelmon_reference_bin_ratio" if kind == "feature" else "modelmon_reference_prediction_bin_ratio"
        refs = {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in
                query(run.base, f"max without(instance, pod, pid) ({ref_metric})", at)["result"]}
        for window in ("1h", "1d"):
            values = {}
            for version, make in (("old", _old), ("aligned", _old_aligned), ("new", _new)):
                started = time.monotonic()
                bins = query(run.base, make(f"modelmon_{kind}_bin_total", window), at)["result"]
                sums = {}
                for sign in ("positive", "negative"):
                    for part in ("sum", "count"):
                        expr = make(f"modelmon_{kind}_value_{part}", window, f'{{sign="{sign}"}}')
                        for s in query(run.base, expr, at)["result"]:
                            key = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "sign"))
                            sums[(key, sign, part)] = float(s["value"][1])
                values[version] = ({tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in bins}, sums)
                log(f"compare {kind} {window} {version}: {len(bins)} bins in {time.monotonic() - started:.0f} s")
            result[f"{kind}_{window}"] = differences(values["old"], values["new"], refs, column)
            result[f"{kind}_{window}, aligned"] = differences(values["aligned"], values["new"], refs, column)
    return result


def differences(old: tuple, new: tuple, refs: dict, column: str) -> dict:
    (old_bins, old_sums), (new_bins, new_sums) = old, new

    def column_key(key: tuple) -> tuple:
        return tuple(kv for kv in key if kv[0] != "bin")

    def per_column(bins: dict) -> dict:
        out: dict = {}
        for key, value in bins.items():
            out.setdefault(column_key(key), {})[dict(key)["bin"]] = value
        return out

    rel = lambda a, b: abs(b - a) / abs(a) if a else (0.0 if b == 0 else math.inf)  # noqa: E731
    o, n = per_column(old_bins), per_column(new_bins)
    d = {"bin_increase": 0.0, "bin_increase_min_1000": 0.0, "values": 0.0, "share": 0.0, "share_min_1000": 0.0,
         "psi_abs": 0.0, "mean": 0.0, "mean_shift_abs": 0.0, "columns": len(o)}
    squares, counted, poisson = 0.0, 0, []
    for col, bins in o.items():
        other = n.get(col, {})
        total_o, total_n = sum(bins.values()), sum(other.values())
        d["values"] = max(d["values"], rel(total_o, total_n))
        psi = {}
        for which, b, total in (("old", bins, total_o), ("new", other, total_n)):
            s = 0.0
            for bin_name, count in b.items():
                ref = refs.get(tuple(sorted(dict(col, bin=bin_name).items())), 0.0)
                live, q = max(count / total, 1e-4), max(ref, 1e-4)
                s += (live - q) * math.log(live / q)
            psi[which] = s
        d["psi_abs"] = max(d["psi_abs"], abs(psi["old"] - psi["new"]))
        for bin_name, count in bins.items():
            if count > 0:
                d["bin_increase"] = max(d["bin_increase"], rel(count, other.get(bin_name, 0.0)))
                d["share"] = max(d["share"], rel(count / total_o, other.get(bin_name, 0.0) / total_n))
                if count >= 1000:
                    d["bin_increase_min_1000"] = max(d["bin_increase_min_1000"], rel(count, other.get(bin_name, 0.0)))
                    share_rel = rel(count / total_o, other.get(bin_name, 0.0) / total_n)
                    d["share_min_1000"] = max(d["share_min_1000"], share_rel)
                    squares, counted = squares + share_rel ** 2, counted + 1
                    poisson.append(1 / math.sqrt(count))
    # root mean square over the bins of >= 1000 values; and, for scale, the median relative
    # standard deviation of those bins' counts themselves (Poisson: 1 / sqrt(count))
    d["share_min_1000_rms"] = math.sqrt(squares / counted) if counted else 0.0
    d["poisson_median"] = statistics.median(poisson) if poisson else 0.0
    keys = {k for (k, _, _) in old_sums}
    for key in keys:
        means = []
        for sums in (old_sums, new_sums):
            total = sums.get((key, "positive", "sum"), 0) - sums.get((key, "negative", "sum"), 0)
            count = sums.get((key, "positive", "count"), 0) + sums.get((key, "negative", "count"), 0)
            means.append((total / count, count) if count else (math.nan, 0))
        if means[0][1]:
            d["mean"] = max(d["mean"], rel(means[0][0], means[1][0]))
    return d


def measure(generator: Path, models: int, rev: str | None, line: str, settle: float, evaluations: int,
            do_compare: bool, keep: bool, top: int, rules_dir: Path | None = None, steady: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-rules-m{models}-", dir="/tmp"))
    rules = rule_files(rev, work / "rules", rules_dir)
    window = big_window(rules)
    big_history = 26 * 3600 if do_compare else min(26 * 3600, max(2 * 3600, window + 3600))
    free = shutil.disk_usage(work).free
    need = models * FEATURES * BINS * INSTANCES * 2 * (big_history / 15) * 1.5  # ~1.5 bytes a sample, 2 families
    if free < 2 * need:
        raise SystemExit(f"not enough disk in {work}: {free / 2**30:.1f} GiB free, ~{need / 2**30:.1f} GiB needed")
    run = Run(work, generator, models, rules, line, big_history, steady)
    try:
        version = run.version()
        started = time.monotonic()
        seen = observe(run, settle, evaluations)
        groups, rules_ranked = summarise(seen)
        ranked = costliest(run, rules_ranked, top)
        result = {"models": models, "rules": rev or "working tree", "rules_dir": str(rules_dir or ""),
                  "prometheus": version, "series": run.series, "samples": run.samples,
                  "tsdb_gib": run.tsdb_bytes / 2**30, "big_history_h": big_history / 3600,
                  "generate_s": run.generate_seconds, "observed_s": time.monotonic() - started, "groups": groups,
                  "costliest": ranked, "load": os.getloadavg()[0], "core_share": sum(g["share"] for g in groups),
                  "errors": sorted({e for r in rules_ranked for e in r["errors"]}),
                  "data": "steady" if steady else "poisson",
                  "prometheus_cpu": run.prom_cpu, "contention": run.contention, "loads": run.loads,
                  "rules_ranked": [{k: r[k] for k in ("group", "rule", "median_s", "per_second")} for r in rules_ranked]}
        if do_compare:
            result["compare"] = compare(run)
        return result
    finally:
        run.close()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


def markdown(results: list[dict]) -> str:
    parts = []
    for r in results:
        rows = [[g["group"], f"{g['interval']:g} s", g["evaluations"], f"{g['median_s']:.3f}", f"{g['max_s']:.3f}",
                 f"{100 * g['share']:.2f}%"] for g in r["groups"] if g["median_s"] >= 0.0005]
        rows.append(["**all groups**", "", "", "", "", f"**{100 * r['core_share']:.1f}%**"])
        parts.append(
            f"**{r['rules']}, M={r['models']}** ({r['series']:,} series at the start, {r['samples'] / 1e6:.0f} M samples "
            f"backfilled, per-feature families {r['big_history_h']:g} h; Prometheus {r['prometheus']}; load "
            f"{r.get('loads', (r['load'],) * 2)[0]:.1f} to {r.get('loads', (r['load'],) * 2)[1]:.1f}; contention {r.get('contention', math.nan):.1f}, Prometheus's own CPU "
            f"{100 * r.get('prometheus_cpu', math.nan):.0f}% of a core, scrapes included):\n\n"
            + table(["group", "interval", "evaluations", "median s", "max s", "duration / interval"], rows)
            + "\n\nCostliest rules (median evaluation time over interval; samples touched by one run with "
              "`stats=all`):\n\n"
            + table(["rule", "group", "median s", "of a core", "samples", "peak samples"],
                    [[f"`{c['rule']}`", c["group"], f"{c['median_s']:.3f}", f"{100 * c['per_second']:.2f}%",
                      f"{c['samples']:,}" if c.get("samples") is not None else "?",
                      f"{c['peak']:,}" if c.get("peak") is not None else "?"] for c in r["costliest"]]))
        if r.get("errors"):
            parts.append("Rule errors: " + "; ".join(r["errors"]))
        if r.get("compare"):
            rows = [[k, f"{v['columns']}", f"{100 * v['values']:.3f}%", f"{100 * v['bin_increase_min_1000']:.3f}%",
                     f"{100 * v['bin_increase']:.3f}%", f"{100 * v['share_min_1000']:.3f}%",
                     f"{100 * v.get('share_min_1000_rms', math.nan):.3f}%", f"{100 * v.get('poisson_median', math.nan):.2f}%",
                     f"{v['psi_abs']:.2e}", f"{100 * v['mean']:.3f}%"] for k, v in r["compare"].items()]
            parts.append(f"Short-window construction against today's definitions, same data ({r.get('data', 'poisson')} "
                         "counters), at the same minute and aligned (today's 2 minutes earlier); largest relative "
                         "difference, and for shares also the root mean square, next to the median Poisson relative "
                         "standard deviation of those bins' counts (1 / sqrt(count)):\n\n" + table(
                             ["family, window", "columns", "values per column", "bin increase (>= 1000)",
                              "bin increase (any)", "share (>= 1000)", "share rms (>= 1000)", "Poisson sd",
                              "PSI (absolute)", "mean"], rows))
    return "\n\n".join(parts)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups (Prometheus, tsdbgen, TSDB)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--quick", action="store_true", help="M=10 only, shorter observation")
    parser.add_argument("--models", type=int, nargs="+", default=[10, GOAL_MODELS])
    parser.add_argument("--rules-rev", help="git revision whose prometheus/rules to load (default: the working tree)")
    parser.add_argument("--rules-dir", type=Path, help="load the rule files of this directory instead")
    parser.add_argument("--prometheus", choices=sorted(PROMETHEUS), default="3")
    parser.add_argument("--settle", type=float, default=240, help="seconds to observe at least")
    parser.add_argument("--evaluations", type=int, default=4, help="evaluations to see of the groups of <= 60 s")
    parser.add_argument("--compare", action="store_true", help="check the short-window construction (full history)")
    parser.add_argument("--steady", action="store_true", help="counters grow by exactly their mean (no Poisson draws)")
    parser.add_argument("--top", type=int, default=6, help="costliest rules to run with stats=all")
    parser.add_argument("--keep", action="store_true", help="keep the TSDB and logs")
    args = parser.parse_args()
    models = [10] if args.quick else args.models
    settle = 120 if args.quick else args.settle
    with tempfile.TemporaryDirectory(prefix="bench-rules-gen-") as tmp:
        generator = build_generator(Path(tmp))
        results = []
        for m in models:
            results.append(measure(generator, m, args.rules_rev, args.prometheus, settle, args.evaluations,
                                   args.compare, args.keep, args.top, args.rules_dir, args.steady))
            log(json.dumps({k: v for k, v in results[-1].items() if k not in ("costliest",)}, indent=1, default=str))
    largest = max(results, key=lambda r: r["models"])
    scaled = largest["core_share"] * GOAL_MODELS / largest["models"]
    how = "measured" if largest["models"] >= GOAL_MODELS else f"extrapolated linearly from M={largest['models']}"
    targets = [target(f"rule set at M={GOAL_MODELS} within {GOAL_CORE_SHARE:.0%} of one core",
                      f"{100 * scaled:.1f}% ({how})", None if args.quick else scaled <= GOAL_CORE_SHARE)]
    compared = [r["compare"] for r in results if r.get("compare")]
    if compared:
        data = "/".join(sorted({r.get("data", "poisson") for r in results if r.get("compare")}))
        worst = max(max(v["values"], v["share_min_1000"], v["mean"]) for c in compared for k, v in c.items()
                    if k.endswith("aligned"))
        targets.append(target(f"recorded values within 1% of today's definitions ({data} counters, aligned)",
                              f"{100 * worst:.2f}% (values per column, shares of bins with >= 1000 values, means)",
                              worst <= 0.01))
    write_result(args, "Rule cost", markdown(results), targets, {"runs": results})


if __name__ == "__main__":
    main()
