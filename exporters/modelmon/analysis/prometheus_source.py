"""Bin counts of a window read from Prometheus (or Thanos, Mimir: the same HTTP API), for
``modelmon report --prometheus URL``.

The aggregation runs where the data is: one instant query per metric family at the end
of the window,

    sum by (version, feature, bin) (increase(modelmon_feature_bin_total{model="M"}[W]))

(and ``modelmon_prediction_bin_total`` by ``output``), the recording rules' increase
summed over every replica, pod and worker of the fleet. A report of a day or a month
then costs the same few queries whatever the traffic. Only the binned statistics can be
computed from counts; the raw-value tests (Kolmogorov-Smirnov and Wasserstein on values,
Kruskal-Wallis) are not run, and the report says so.
"""
from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .event_source import SourceError, parse_since
from ..serving.reference import Reference

FAMILIES = (("features", "modelmon_feature_bin_total", "feature"),
            ("outputs", "modelmon_prediction_bin_total", "output"))


def label_value(text: str) -> str:
    """A PromQL string literal."""
    return json.dumps(text)


def parse_time(text: str | None, now: datetime | None = None) -> datetime:
    """--until: a Unix time, an ISO 8601 time, or a duration before now (1h); None: now."""
    now = now or datetime.now(timezone.utc)
    if text is None:
        return now
    try:
        return datetime.fromtimestamp(float(text), timezone.utc)
    except ValueError:
        pass
    when = parse_since(text, now)
    assert when is not None
    return when


@dataclass
class PrometheusCounts:
    """Increase of each bin over the window, per version, and what the source said."""

    url: str
    start: datetime
    end: datetime
    window_seconds: int
    counts: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # column -> version -> bin -> n
    references: dict[str, str] = field(default_factory=dict)  # version -> reference hash of modelmon_model_info
    queries: list[str] = field(default_factory=list)


class Client:
    """The Prometheus HTTP API's instant queries; bearer token from $PROMETHEUS_TOKEN."""

    def __init__(self, url: str, timeout: float = 60):
        self.url, self.timeout = url.rstrip("/"), timeout

    def query(self, expr: str, at: datetime) -> list[dict[str, Any]]:
        body = urllib.parse.urlencode({"query": expr, "time": f"{at.timestamp():.3f}"}).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        if os.environ.get("PROMETHEUS_TOKEN"):
            request.add_header("Authorization", f"Bearer {os.environ['PROMETHEUS_TOKEN']}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise SourceError(f"{self.url}: query failed ({exc.code}): {detail}") from None
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.url}: cannot query Prometheus: {exc}") from None
        if answer.get("status") != "success":
            raise SourceError(f"{self.url}: query failed: {answer.get('error', answer)}")
        return answer["data"]["result"]


def read_counts(url: str, reference: Reference, since: str | None, until: str | None = None) -> PrometheusCounts:
    """The reference model's bin increases over the window ``since`` (a duration, or an
    ISO time: the window ends at ``until``, default now)."""
    if since is None:
        raise SourceError("--prometheus needs --since: the window to report on (24h, 7d, or an ISO 8601 time)")
    end = parse_time(until)
    start = parse_since(since, end)
    assert start is not None
    seconds = int(round((end - start).total_seconds()))
    if seconds <= 0:
        raise SourceError(f"--since {since}: the window must end after it starts")
    client = Client(url)
    result = PrometheusCounts(url, start, end, seconds)
    model = label_value(reference.model)
    for role, metric, label in FAMILIES:
        names = reference.features if role == "features" else reference.outputs
        if not names:
            continue
        expr = f"sum by (version, {label}, bin) (increase({metric}{{model={model}}}[{seconds}s]))"
        result.queries.append(expr)
        for series in client.query(expr, end):
            labels, value = series["metric"], float(series["value"][1])
            name = labels.get(label)
            if name not in names or not math.isfinite(value):
                continue
            per_version = result.counts.setdefault(name, {}).setdefault(labels.get("version", ""), {})
            per_version[labels.get("bin", "")] = per_version.get(labels.get("bin", ""), 0.0) + value
    info = f"max by (version, reference) (last_over_time(modelmon_model_info{{model={model}}}[{seconds}s]))"
    result.queries.append(info)
    for series in client.query(info, end):
        result.references[series["metric"].get("version", "")] = series["metric"].get("reference", "")
    return result


def fill(live: Any, counts: PrometheusCounts) -> list[str]:
    """Put the counts into a ``live.Live``: per column and per version (as segments). Returns notes."""
    notes = []
    versions = sorted({v for per in counts.counts.values() for v in per})
    for version in versions:
        live._code(version)
    unknown: dict[str, float] = {}
    for name, profile in live.profiles.items():
        labels = profile.bin_labels
        index = {label: i for i, label in enumerate(labels)}
        per_group = live.group_counts.setdefault(name, [])
        while len(per_group) < len(live.segments):
            per_group.append(np.zeros(len(labels)))
        total = np.zeros(len(labels))
        for version, bins in counts.counts.get(name, {}).items():
            row = np.zeros(len(labels))
            for label, n in bins.items():
                if label in index:
                    row[index[label]] += n
                else:
                    unknown[name] = unknown.get(name, 0.0) + n
            per_group[live._codes[version]] = per_group[live._codes[version]] + row
            total += row
        live.counts[name] = total
    first = next(iter(live.profiles))  # rows per version: the values its first column counted
    for version, bins in counts.counts.get(first, {}).items():
        live.versions[version] = round(sum(bins.values()))
    live.events = round(max((float(c.sum()) for c in live.counts.values()), default=0.0))
    live.raw_values = False
    for name, n in unknown.items():
        notes.append(f"{name}: {n:g} counts in bins the reference does not have (another reference?) left out")
    other = {v: h for v, h in counts.references.items() if h and h != live.reference.hash}
    if other:
        notes.append("versions monitored against another reference profile (modelmon_model_info): "
                     + ", ".join(f"{v} ({h})" for v, h in sorted(other.items())))
    return notes
