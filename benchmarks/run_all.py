"""Run every benchmark and write docs/benchmarks.md.

    benchmarks/.venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...] [--output FILE]

Each ``benchmarks/bench_*.py`` (bench_observe.py aside: ``make bench`` runs it in the
package's own virtualenv) runs as ``python -m benchmarks.NAME`` from the repository root,
in its own process; one that fails is reported as "not run: <reason>" and the rest go on.
The page ends with pyinstrument profiles of modelmon's hot paths from the same run.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ORDER = ["bench_row", "bench_batch", "bench_service", "bench_scrape", "bench_memory", "bench_pipeline"]
TIMEOUT_SECONDS = 1200
# bench_rules builds TSDBs of 10 and 100 models and watches every rule group evaluate
TIMEOUTS = {"bench_rules": 3600}
PACKAGES = ["modelmon", "prometheus-client", "numpy", "pandas", "scikit-learn", "whylogs", "evidently",
            "alibi-detect", "prometheus-flask-exporter", "flask", "gunicorn", "elasticsearch", "pyinstrument"]


def benchmarks() -> list[str]:
    found = {p.stem for p in HERE.glob("bench_*.py")} - {"bench_observe"}
    return [name for name in ORDER if name in found] + sorted(found - set(ORDER))


def run(name: str, quick: bool, out: Path) -> tuple[dict | None, str]:
    """The benchmark's result, or None and why it did not run."""
    command = [sys.executable, "-m", f"benchmarks.{name}", "--out", str(out)] + (["--quick"] if quick else [])
    print(f"=== {name}", flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                              timeout=TIMEOUTS.get(name, TIMEOUT_SECONDS))
    except subprocess.TimeoutExpired:
        return None, f"timed out after {TIMEOUTS.get(name, TIMEOUT_SECONDS)} s"
    print(f"=== {name}: exit {proc.returncode} after {time.monotonic() - start:.0f} s", flush=True)
    if proc.returncode != 0 or not out.exists():
        sys.stderr.write(proc.stderr[-4000:])
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        return None, lines[-1] if lines else f"exit code {proc.returncode}"
    return json.loads(out.read_text()), ""


def command_output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    memory = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20
    commit = command_output("git", "rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes in the tree)" if command_output("git", "status", "--porcelain") else ""
    blas = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ)
    es_version = ROOT / "elk" / "VERSION"
    tools = [f"wrk {command_output('dpkg-query', '-W', '-f', '${Version}', 'wrk') or 'absent'}",
             f"hey {command_output('dpkg-query', '-W', '-f', '${Version}', 'hey') or 'absent'}",
             f"Elasticsearch {es_version.read_text().strip() if es_version.exists() else '?'}"]
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    return "\n".join([
        f"- CPU: {cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores, {memory:.0f} GiB",
        f"- OS: Linux {platform.release()}, Python {platform.python_version()}",
        f"- modelmon at commit {commit}{dirty}",
        f"- OpenBLAS settings: {blas or 'none'}",
        "- " + ", ".join(versions),
        "- " + ", ".join(tools),
    ])


def page(results: dict[str, tuple[dict | None, str]], profiles: str, quick: bool, started: datetime,
         seconds: float, about: str, load: float) -> str:
    targets, sections = [], []
    for name, (result, why) in results.items():
        if result is None:
            sections.append(f"## {name}\n\nnot run: {why}")
            targets.append([name, "not run", why])
            continue
        sections.append(f"## {result['title']}\n\n{result['markdown']}")
        for t in result["targets"]:
            verdict = "met" if t["met"] else "**missed**" if t["met"] is False else "not decided (quick run)"
            targets.append([t["name"], t["measured"], verdict])
    rows = "\n".join(f"| {' | '.join(map(str, row))} |" for row in targets)
    return "\n\n".join([
        "# Benchmarks",
        "modelmon side by side with what users would pick instead: plain prometheus-client, whylogs, "
        "Evidently, alibi-detect and prometheus-flask-exporter, measured in one run on one machine. "
        f"This page is written by `make bench` (`benchmarks/run_all.py`); this {'quick ' if quick else ''}run "
        f"started {started:%Y-%m-%d %H:%M} UTC and took {seconds / 60:.0f} minutes. Do not edit it by hand: "
        "rerun it.",
        "## Targets",
        "| target | measured | verdict |\n|---|---|---|\n" + rows,
        "## Machine and versions",
        about + f"\n- load average (1 min): {load:.2f} at the start of the run, {os.getloadavg()[0]:.2f} at the "
        "end (the machine is shared: other work makes absolute numbers noisy, so every comparison is "
        "between contenders measured in turn in the same run)",
        *sections,
        "## Where modelmon's time goes",
        "pyinstrument call trees of modelmon's hot paths on the benchmark data, from the same run "
        "(`python -m benchmarks.profile_hot_path`); wall-clock samples, so time spent waiting for a core "
        "that other work holds is spread over whatever ran.",
        profiles,
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller sizes (a few minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (bench_row, bench_batch, ...)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    started, start = datetime.now(timezone.utc), time.monotonic()
    about, load = machine(), os.getloadavg()[0]
    names = args.only or benchmarks()
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        results = {name: run(name, args.quick, Path(tmp) / f"{name}.json") for name in names}
    profiles = command_output(sys.executable, "-m", "benchmarks.profile_hot_path") or "not run"
    text = page(results, profiles, args.quick, started, time.monotonic() - start, about, load)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
