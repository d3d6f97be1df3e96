"""Writes the modelmon Grafana dashboards: .venv/bin/python grafana/generate.py

The JSON files in grafana/dashboards/ are generated from this file, and
tests/test_dashboards.py fails when they differ from what it writes: edit here, run it,
commit both. Format: Grafana's classic dashboard JSON model, schemaVersion 42 (Grafana
12.4, see grafana/VERSION). Every panel queries the dashboard's ``datasource``
variable; the data sources themselves are provisioned with fixed uids by
grafana/provisioning/datasources/modelmon.yml.

PromQL uses the recording rules of prometheus/rules/ where one exists (the same series
the alerts evaluate) and raw counters with $__rate_interval where none does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from modelmon.serving.metrics import MEAN_SHIFT_MIN_EFFECT, NEGATIVE, POSITIVE, SIGN  # the package: run with .venv/bin/python

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 42
# Where the runbook links go: the hidden constant variable runbook_base_url, whose default is
# the runbook server the shipped stacks run (compose's runbooks service, make demo's), like
# Prometheus' external label runbook_base_url. Point it at your wiki: change it here and
# regenerate, or edit the variable in the dashboard.
RUNBOOK_BASE_URL = "http://localhost:9098"
RUNBOOKS = "${runbook_base_url}"
PROMETHEUS_UID = "modelmon-prometheus"
ELASTICSEARCH_UID = "modelmon-elasticsearch"

# uid, slug (the URL path Grafana derives from the title) and title of each dashboard.
OPS = ("modelmon-ops", "model-service", "Model service")
DATA = ("modelmon-data", "model-data", "Model data")
LOGS = ("modelmon-logs", "model-events", "Model events")

SEL = 'job=~"$job", model=~"$model", version=~"$version"'
# Keeps per-instance series (process, HTTP, up) of the instances serving the selected models.
ON_MODEL = f"and on(job, instance) modelmon_model_info{{{SEL}}}"
MV = "{{model}} {{version}}"
LUCENE_MODEL = "modelmon.model:$model AND modelmon.version:$version"


# -- queries -------------------------------------------------------------------------

def prom(expr: str, legend: str = "", *, table: bool = False, heatmap: bool = False) -> dict:
    """A Prometheus query: a range query, or an instant one returned as a table."""
    target = {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "editorMode": "code", "expr": expr,
              "legendFormat": legend or "__auto", "range": not table, "instant": table}
    if table:
        target["format"] = "table"
    if heatmap:
        target["format"] = "heatmap"
    return target


def lucene(query: str, metric: dict, *bucket_aggs: dict) -> dict:
    """An Elasticsearch query (Lucene query string, bucket aggregations outermost first)."""
    return {"datasource": {"type": "elasticsearch", "uid": "${datasource}"}, "query": query,
            "alias": "", "metrics": [metric], "bucketAggs": list(bucket_aggs), "timeField": "@timestamp"}


COUNT = {"id": "1", "type": "count"}


def date_histogram(agg_id: str) -> dict:
    return {"id": agg_id, "type": "date_histogram", "field": "@timestamp",
            "settings": {"interval": "auto", "min_doc_count": "0", "trimEdges": "0"}}


def terms(agg_id: str, field: str, size: int = 10) -> dict:
    return {"id": agg_id, "type": "terms", "field": field,
            "settings": {"size": str(size), "order": "desc", "orderBy": "_count", "min_doc_count": "1"}}


def raw_data(size: int = 100) -> dict:
    return {"id": "1", "type": "raw_data", "settings": {"size": str(size)}}


# -- field configuration -------------------------------------------------------------

def steps(*levels: tuple[float, str], base: str = "green") -> dict:
    return {"mode": "absolute", "steps": [{"color": base, "value": None}]
            + [{"color": color, "value": value} for value, color in levels]}


def by_ref(ref: str, *properties: dict) -> dict:
    return {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": list(properties)}


def by_name(name: str, *properties: dict) -> dict:
    return {"matcher": {"id": "byName", "options": name}, "properties": list(properties)}


def prop(prop_id: str, value) -> dict:
    return {"id": prop_id, "value": value}


def dashed(ref: str, color: str = "red") -> dict:
    """Draw query ``ref`` as a dashed line: a threshold or a reference value."""
    return by_ref(ref, prop("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                  prop("color", {"mode": "fixed", "fixedColor": color}), prop("custom.fillOpacity", 0))


def colored_cells(name: str, unit: str, thresholds: dict) -> dict:
    return by_name(name, prop("unit", unit), prop("thresholds", thresholds),
                   prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}))


def link(title: str, url: str) -> dict:
    return {"title": title, "url": url, "targetBlank": url.startswith("http")}


def runbook(alert: str) -> dict:
    return link(f"Runbook: {alert}", f"{RUNBOOKS}/{alert}.md")


SELECTION = ("${job:queryparam}", "${model:queryparam}", "${version:queryparam}")


def dashboard_url(board: tuple[str, str, str], *extra: str) -> str:
    """A panel link to a modelmon dashboard keeping the time range and the selection."""
    return f"/d/{board[0]}/{board[1]}?" + "&".join(("${__url_time_range}", *SELECTION, *extra))


def to_board(board: tuple[str, str, str]) -> dict:
    return link(f"Dashboard: {board[2]}", dashboard_url(board))


def board_link(board: tuple[str, str, str]) -> dict:
    """A dashboard link keeping the selection; Grafana adds the time range (keepTime)."""
    return {"title": board[2], "type": "link", "url": f"/d/{board[0]}/{board[1]}?" + "&".join(SELECTION),
            "icon": "dashboard", "tooltip": f"{board[2]} dashboard for the same models", "tags": [],
            "asDropdown": False, "includeVars": False, "keepTime": True, "targetBlank": False}


RUNBOOKS_LINK = {"title": "Runbooks", "type": "link", "url": f"{RUNBOOKS}/", "icon": "doc",
                 "tooltip": "One page per modelmon alert", "tags": [], "asDropdown": False,
                 "includeVars": False, "keepTime": False, "targetBlank": True}


# -- panels --------------------------------------------------------------------------

def panel(kind: str, title: str, description: str, unit: str, targets: list[dict], *, options: dict,
          custom: dict | None = None, overrides: tuple = (), links: tuple = (), transformations: tuple = (),
          width: int = 12, height: int = 8, **defaults) -> dict:
    """A panel; refIds A, B, ... follow the order of ``targets``; ``layout`` places it."""
    datasource = targets[0]["datasource"]
    field_defaults = {"unit": unit, **defaults}
    if custom is not None:
        field_defaults["custom"] = custom
    built = {
        "type": kind, "title": title, "description": description, "datasource": datasource,
        "targets": [{**target, "refId": chr(ord("A") + i)} for i, target in enumerate(targets)],
        "fieldConfig": {"defaults": field_defaults, "overrides": list(overrides)},
        "options": options, "links": list(links), "gridPos": {"w": width, "h": height},
    }
    if transformations:
        built["transformations"] = list(transformations)
    return built


LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
TABLE_LEGEND = {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull", "max"]}


def timeseries(title: str, description: str, unit: str, targets: list[dict], *, stack: bool = False,
               bars: bool = False, legend: dict = TABLE_LEGEND, **kwargs) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 80 if bars else 10,
              "showPoints": "never", "spanNulls": False, "axisSoftMin": 0,
              "stacking": {"mode": "normal" if stack or bars else "none", "group": "A"}}
    options = {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, unit, targets, options=options, custom=custom,
                 color={"mode": "palette-classic"}, **kwargs)


def table(title: str, description: str, unit: str, targets: list[dict], *, columns: dict[str, str],
          sort_by: str | None = None, **kwargs) -> dict:
    """A table of instant queries merged on their labels; ``columns`` renames and orders them."""
    options = {"showHeader": True, "cellHeight": "sm",
               "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    merge = ({"id": "merge", "options": {}},) if len(targets) > 1 else ()
    return panel("table", title, description, unit, targets, options=options,
                 custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
                 transformations=(*merge, *pick(columns)), **kwargs)


def pick(columns: dict[str, str]) -> tuple:
    """Keep these fields, in this order, renamed (name -> shown name)."""
    return (
        {"id": "filterFieldsByName", "options": {"include": {"names": list(columns)}}},
        {"id": "organize", "options": {
            "excludeByName": {},
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": {name: shown for name, shown in columns.items() if shown != name},
        }},
    )


def barchart(title: str, description: str, unit: str, targets: list[dict], *, transformations: tuple,
             horizontal: bool = False, **kwargs) -> dict:
    options = {"orientation": "horizontal" if horizontal else "auto", "xTickLabelRotation": 0 if horizontal else -45,
               "xTickLabelSpacing": 0, "showValue": "auto" if horizontal else "never", "stacking": "none",
               "groupWidth": 0.7, "barWidth": 0.97, "barRadius": 0, "fullHighlight": False,
               "legend": LEGEND, "tooltip": {"mode": "multi", "sort": "none"}}
    return panel("barchart", title, description, unit, targets, options=options, transformations=transformations,
                 custom={"fillOpacity": 80, "lineWidth": 1, "gradientMode": "none", "axisSoftMin": 0},
                 color={"mode": "palette-classic"}, **kwargs)


def side_by_side(field: str, live: str, training: str) -> tuple:
    """Join a live and a training instant query on ``field``, as two bars per value."""
    return (
        {"id": "filterFieldsByName", "options": {"include": {"names": [field, "Value #A", "Value #B"]}}},
        {"id": "joinByField", "options": {"byField": field, "mode": "outer"}},
        {"id": "organize", "options": {"renameByName": {"Value #A": live, "Value #B": training}}},
        {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": field, "desc": False}]}},
    )


def stat(title: str, description: str, unit: str, targets: list[dict], *, thresholds: dict, **kwargs) -> dict:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "background", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
               "textMode": "value_and_name", "wideLayout": True, "showPercentChange": False}
    return panel("stat", title, description, unit, targets, options=options, thresholds=thresholds,
                 color={"mode": "thresholds"}, **kwargs)


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# -- dashboards ----------------------------------------------------------------------

def datasource_variable(name: str, label: str, plugin: str, uid: str, name_shown: str) -> dict:
    return {"type": "datasource", "name": name, "label": label, "query": plugin, "regex": "", "hide": 0,
            "refresh": 1, "includeAll": False, "multi": False, "options": [], "skipUrlSync": False,
            "current": {"selected": False, "text": name_shown, "value": uid}}


def query_variable(name: str, label: str, query: str, description: str, *, datasource: str = "datasource",
                   multi: bool = True) -> dict:
    """A label_values() variable, refreshed when the time range changes."""
    return {"type": "query", "name": name, "label": label, "description": description,
            "datasource": {"type": "prometheus", "uid": f"${{{datasource}}}"},
            "definition": query,
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2, "regex": "", "sort": 1, "hide": 0, "skipUrlSync": False, "options": [],
            "multi": multi, "includeAll": multi,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {}}


# The ops dashboard's jobs: the model services', and the log shippers' (modelmon ship).
SERVICE_AND_SHIPPER_JOBS = ('{__name__=~"modelmon_model_info|modelmon_shipper_backlog_bytes"}',
                            "Prometheus scrape jobs serving modelmon models, and those of the log shippers.")


def model_variables(datasource: str = "datasource", jobs: tuple[str, str] = (
        "modelmon_model_info", "Prometheus scrape jobs serving modelmon models.")) -> list[dict]:
    """job, model and version; ``jobs`` is the series the job variable lists jobs of, and its description."""
    return [
        query_variable("job", "Job", f"label_values({jobs[0]}, job)", jobs[1], datasource=datasource),
        query_variable("model", "Model", 'label_values(modelmon_model_info{job=~"$job"}, model)',
                       "Models served by the selected jobs.", datasource=datasource),
        query_variable("version", "Version", 'label_values(modelmon_model_info{job=~"$job", model=~"$model"}, version)',
                       "Model versions served; select two to compare a canary or shadow with the primary.",
                       datasource=datasource),
    ]


def prometheus_variable(name: str = "datasource") -> dict:
    label = "Data source" if name == "datasource" else "Metrics data source"
    return datasource_variable(name, label, "prometheus", PROMETHEUS_UID, "Prometheus")


def runbook_variable() -> dict:
    """The base of the runbook links: a hidden constant (see RUNBOOK_BASE_URL)."""
    return {"type": "constant", "name": "runbook_base_url", "label": "Runbooks", "hide": 2,
            "description": "Base URL of the runbook links (one page per alert, <base>/<Alert>.md).",
            "query": RUNBOOK_BASE_URL, "skipUrlSync": True,
            "current": {"selected": False, "text": RUNBOOK_BASE_URL, "value": RUNBOOK_BASE_URL}, "options": []}


def dashboard(board: tuple[str, str, str], description: str, variables: list[dict], panels: list[dict],
              others: tuple) -> dict:
    uid, _, title = board
    return {
        "uid": uid, "title": title, "description": description, "tags": ["modelmon"],
        "editable": True, "graphTooltip": 1, "fiscalYearStartMonth": 0, "liveNow": False,
        "time": {"from": "now-6h", "to": "now"}, "timepicker": {}, "timezone": "browser", "weekStart": "",
        "refresh": "1m", "schemaVersion": SCHEMA_VERSION, "version": 1,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [*(board_link(other) for other in others), RUNBOOKS_LINK],
        "templating": {"list": [*variables, runbook_variable()]},
        "panels": layout(panels),
    }


def layout(panels: list[dict]) -> list[dict]:
    """Number the panels and place them left to right, rows across the full width."""
    x = y = line_height = 0
    placed = []
    for number, item in enumerate(panels, start=1):
        item = {"id": number, **item}
        if item["type"] == "row":
            y += line_height
            item["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            x, y, line_height = 0, y + 1, 0
        else:
            w, h = item["gridPos"]["w"], item["gridPos"]["h"]
            if x + w > 24:
                x, y, line_height = 0, y + line_height, 0
            item["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            x, line_height = x + w, max(line_height, h)
        placed.append(item)
    return placed


def threshold(alert: str) -> str:
    return f'model_alert:modelmon_alert_threshold:effective{{{SEL}, alert="{alert}"}}'


def ops_dashboard() -> dict:
    per_process = "{{instance}} {{pid}}"
    panels = [
        row("Traffic and errors"),
        timeseries(
            "Predictions per second",
            "Rows scored per second by each model version, summed over every replica and worker "
            "(recording rule model:modelmon_predictions:rate5m, a 5-minute rate). A drop to zero while there "
            "was traffic earlier in the day fires ModelmonNoPredictions.",
            "cps", [prom(f"model:modelmon_predictions:rate5m{{{SEL}}}", MV)],
            links=(runbook("ModelmonNoPredictions"),), width=8),
        timeseries(
            "HTTP requests per second by route and status",
            "Requests answered by the instances serving the selected models, by route template, method and "
            "status code (modelmon_http_requests_total from the Flask or ASGI middleware).",
            "reqps", [prom("sum by (handler, method, status) (rate(modelmon_http_requests_total"
                           f'{{job=~"$job"}}[$__rate_interval]) {ON_MODEL})', "{{method}} {{handler}} {{status}}")],
            width=8),
        timeseries(
            "Error ratio",
            "Failed predict calls per scored row, and the share of HTTP 5xx responses, over 5 minutes "
            "(recording rules model:modelmon_prediction_errors:ratio_rate5m and "
            "model:modelmon_http_requests:5xx_ratio_rate5m; a series appears with the first error). "
            "Dashed: the model's ModelmonHighErrorRate threshold (5% unless set per model), which either "
            "ratio must stay under.",
            "percentunit", [
                prom(f"model:modelmon_prediction_errors:ratio_rate5m{{{SEL}}}", f"{MV} failed predict calls"),
                prom(f"model:modelmon_http_requests:5xx_ratio_rate5m{{{SEL}}}", f"{MV} HTTP 5xx"),
                prom(threshold("ModelmonHighErrorRate"), f"threshold {MV}"),
            ], overrides=(dashed("C"),), links=(runbook("ModelmonHighErrorRate"),), width=8),
        timeseries(
            "Failed predict calls by exception",
            "Predict calls that raised inside monitor.track(), per second, by exception class "
            "(modelmon_prediction_errors_total; at most 20 classes per model, then 'other'). The events "
            "dashboard lists the failed predictions with their messages.",
            "cps", [prom("sum by (model, version, error) (rate(modelmon_prediction_errors_total"
                         f"{{{SEL}}}[$__rate_interval]))", f"{MV} {{{{error}}}}")],
            links=(runbook("ModelmonHighErrorRate"), to_board(LOGS)), width=12),
        timeseries(
            "modelmon's own failures",
            "Monitoring failures modelmon counted and swallowed, per second, by stage (recording rule "
            "job_stage:modelmon_internal_errors:rate5m; per job, these have no model label). Non-zero means "
            "some metrics of the job are incomplete; the service log says why.",
            "cps", [prom('job_stage:modelmon_internal_errors:rate5m{job=~"$job"}', "{{job}} {{stage}}")],
            links=(runbook("ModelmonMonitoringErrors"),), width=12),
        row("Latency"),
        timeseries(
            "Predict latency p50 / p95 / p99",
            "Time spent in predict per call, percentiles over 5 minutes across all replicas (recording rules "
            "model:modelmon_prediction_duration_seconds:p50_rate5m, p95_rate5m, p99_rate5m). Dashed: the "
            "ModelmonHighLatency threshold for the p95 (0.5 s unless set per model).",
            "s", [
                prom(f"model:modelmon_prediction_duration_seconds:p50_rate5m{{{SEL}}}", f"p50 {MV}"),
                prom(f"model:modelmon_prediction_duration_seconds:p95_rate5m{{{SEL}}}", f"p95 {MV}"),
                prom(f"model:modelmon_prediction_duration_seconds:p99_rate5m{{{SEL}}}", f"p99 {MV}"),
                prom(threshold("ModelmonHighLatency"), f"threshold {MV}"),
            ], overrides=(dashed("D"),),
            links=(runbook("ModelmonHighLatency"), runbook("ModelmonLatencyRegression")), width=8),
        panel(
            "heatmap", "Predict latency heatmap",
            "Predict calls per second in each latency bucket of modelmon_prediction_duration_seconds "
            "(buckets from 1 ms to 10 s), for the selected models and versions together: a second band "
            "appearing above the usual one is a slow code path or a slow dependency.",
            "cps", [prom("sum by (le) (rate(modelmon_prediction_duration_seconds_bucket"
                         f"{{{SEL}}}[$__rate_interval]))", "{{le}}", heatmap=True)],
            options={"calculate": False, "cellGap": 1, "cellValues": {"unit": "cps"},
                     "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
                     "rowsFrame": {"layout": "auto"}, "legend": {"show": True},
                     "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5,
                               "steps": 64, "fill": "dark-orange", "reverse": False},
                     "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
                     "filterValues": {"le": 1e-9}, "exemplars": {"color": "rgba(255,0,255,0.7)"}},
            links=(runbook("ModelmonHighLatency"),), width=8),
        timeseries(
            "HTTP latency p95 by route",
            "95th percentile of the whole request time (routing, parsing, predict, serialising) by route "
            "template, on the instances serving the selected models (modelmon_http_request_duration_seconds).",
            "s", [prom("histogram_quantile(0.95, sum by (handler, le) (rate(modelmon_http_request_duration_seconds"
                       f'_bucket{{job=~"$job"}}[$__rate_interval]) {ON_MODEL}))', "{{handler}}")],
            width=8),
        row("Processes"),
        timeseries(
            "In-flight requests",
            "HTTP requests being served right now by each instance (modelmon_http_requests_in_progress, "
            "summed over workers). Sustained values near the worker count mean requests queue.",
            "short", [prom('sum by (job, instance) (modelmon_http_requests_in_progress{job=~"$job"}) '
                           f"{ON_MODEL}", "{{instance}}")], width=8),
        timeseries(
            "Resident memory per process",
            "Resident memory of each process (process_resident_memory_bytes; under gunicorn one series per "
            "worker, with a pid label). Steady growth over hours fires ModelmonMemoryGrowth.",
            "bytes", [prom(f'process_resident_memory_bytes{{job=~"$job"}} {ON_MODEL}', per_process)],
            links=(runbook("ModelmonMemoryGrowth"),), width=8),
        timeseries(
            "CPU per process",
            "CPU time used per second by each process (rate of process_cpu_seconds_total): 100% is one full "
            "core. Under gunicorn one series per worker, with a pid label.",
            "percentunit", [prom(f'rate(process_cpu_seconds_total{{job=~"$job"}}[$__rate_interval]) {ON_MODEL}',
                                 per_process)], width=8),
        stat(
            "Restarts in the time range",
            "Processes that ended during the selected time range, per instance: every start time seen "
            "(process_start_time_seconds changes, or a new worker pid) minus the processes running now. "
            "0 is a quiet service.",
            "short", [prom('sum by (job, instance) (changes(process_start_time_seconds{job=~"$job"}[$__range]) + 1) '
                           '- count by (job, instance) (process_start_time_seconds{job=~"$job"}) '
                           f"{ON_MODEL}", "{{instance}}")],
            thresholds=steps((1, "orange")), width=8),
        timeseries(
            "Process uptime",
            "Seconds since each process started (time() - process_start_time_seconds): the line dropping "
            "to zero marks a restart.",
            "s", [prom(f'time() - process_start_time_seconds{{job=~"$job"}} {ON_MODEL}', per_process)], width=8),
        panel(
            "state-timeline", "Scrape health",
            "Whether Prometheus could scrape each instance that served the selected models within the last "
            "day (up). Down for 2 minutes fires ModelmonTargetDown.",
            "bool", [prom('up{job=~"$job"} and on(job, instance) '
                          f"last_over_time(modelmon_model_info{{{SEL}}}[1d])", "{{instance}}")],
            options={"mergeValues": True, "showValue": "never", "alignValue": "left", "rowHeight": 0.9,
                     "legend": LEGEND, "tooltip": {"mode": "single", "sort": "none"}},
            color={"mode": "thresholds"}, thresholds=steps((1, "green"), base="red"),
            mappings=[{"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0},
                                                    "1": {"text": "up", "color": "green", "index": 1}}}],
            links=(runbook("ModelmonTargetDown"),), width=8),
        row("Versions and alerts"),
        table(
            "Model versions live now",
            "Every model version the selected jobs serve right now, the hash of its reference profile and "
            "the number of instances (modelmon_model_info). Two rows for one model are a canary or a "
            "rollout in progress.",
            "short", [prom(f"count by (job, model, version, reference) (modelmon_model_info{{{SEL}}})", table=True)],
            columns={"job": "job", "model": "model", "version": "version", "reference": "reference",
                     "Value": "instances"},
            links=(runbook("ModelmonModelVersionChanged"), to_board(DATA)), width=8),
        table(
            "Dependency versions",
            "Installed versions of the packages the monitors report (modelmon_dependency_info), with the "
            "number of instances running each. Two versions of one package in a job are a partial upgrade.",
            "short", [prom('count by (job, package, version) (modelmon_dependency_info{job=~"$job"} '
                           f"{ON_MODEL})", table=True)],
            columns={"job": "job", "package": "package", "version": "installed", "Value": "instances"},
            links=(runbook("ModelmonDependencyChanged"),), width=6),
        table(
            "Firing alerts",
            "Alerts firing now for the selected models (ALERTS). Click an alert name for its runbook.",
            "short", [prom(f'ALERTS{{alertstate="firing", {SEL}}}', table=True)],
            columns={"alertname": "alert", "severity": "severity", "team": "team", "model": "model",
                     "version": "version", "feature": "feature", "output": "output", "instance": "instance"},
            overrides=(by_name("alert", prop("links", [link("Runbook", f"{RUNBOOKS}/${{__value.raw}}.md")])),),
            links=(link("All runbooks", RUNBOOKS_LINK["url"]),), width=10),
    ]
    return dashboard(
        OPS, "Is the model service up, fast and error-free? Traffic, errors, latency, processes, "
        "versions and firing alerts per model version, and the log pipeline shipping the prediction events.",
        [prometheus_variable(), *model_variables(jobs=SERVICE_AND_SHIPPER_JOBS)], [*panels, *pipeline_panels()],
        (DATA, LOGS))


def pipeline_panels() -> list[dict]:
    """The log shipper's own metrics (modelmon ship --metrics-port): a row of the ops dashboard."""
    ship = 'job=~"$job"'
    per_shipper = "{{instance}}"
    return [
        row("Log pipeline"),
        timeseries(
            "Events shipped per second",
            "Prediction events the log shipper (modelmon ship) got indexed into Elasticsearch per second "
            "(modelmon_shipper_documents_indexed_total); events Elasticsearch already had, resent after a "
            "restart or a timeout (duplicate); sends repeated after a transient failure: Elasticsearch down, "
            "429, 5xx, 401 or 403 (retried). Retries and no indexing: Elasticsearch takes no events.",
            "cps", [
                prom(f"rate(modelmon_shipper_documents_indexed_total{{{ship}}}[$__rate_interval])",
                     f"{per_shipper} indexed"),
                prom(f"rate(modelmon_shipper_documents_duplicate_total{{{ship}}}[$__rate_interval])",
                     f"{per_shipper} duplicate"),
                prom(f"rate(modelmon_shipper_documents_retried_total{{{ship}}}[$__rate_interval])",
                     f"{per_shipper} retried"),
            ], links=(runbook("ModelmonShipperBacklog"), to_board(LOGS)), width=8),
        timeseries(
            "Dead letters (15 min)",
            "Events the shipper wrote to its dead-letter file (<state-dir>/dead-letter.jsonl) instead of "
            "Elasticsearch in the 15 minutes before each point: rejected by Elasticsearch, a mapping conflict "
            "or another 4xx (modelmon_shipper_documents_rejected_total), or corrupt, not a JSON object "
            "(modelmon_shipper_documents_corrupt_total). Any fires ModelmonShipperRejectedDocuments.",
            "short", [
                prom(f"increase(modelmon_shipper_documents_rejected_total{{{ship}}}[15m])", f"{per_shipper} rejected"),
                prom(f"increase(modelmon_shipper_documents_corrupt_total{{{ship}}}[15m])", f"{per_shipper} corrupt"),
            ], links=(runbook("ModelmonShipperRejectedDocuments"),), width=8),
        timeseries(
            "Backlog",
            "Bytes of the event files not acknowledged by Elasticsearch yet (modelmon_shipper_backlog_bytes), "
            "and where the last 30 minutes' trend puts it in an hour (dashed). ModelmonShipperBacklog fires "
            "when the backlog has not shrunk for 30 minutes and the trend passes 50 MiB (dashed red), the "
            "lag passes 10 minutes or nothing was indexed for 15 minutes.",
            "bytes", [
                prom(f"modelmon_shipper_backlog_bytes{{{ship}}}", per_shipper),
                prom(f"predict_linear(modelmon_shipper_backlog_bytes{{{ship}}}[30m], 3600)",
                     f"{per_shipper} in 1h at the 30m trend"),
                prom(f"modelmon_shipper_backlog_bytes{{{ship}}} * 0 + 50 * 1024 * 1024", f"threshold {per_shipper}"),
            ], overrides=(dashed("B", "text"), dashed("C")), links=(runbook("ModelmonShipperBacklog"),), width=8),
        timeseries(
            "Shipping lag",
            "Now minus the @timestamp of the newest event shipped (modelmon_shipper_lag_seconds; 0 until a "
            "shipper that started ships its first). It grows whenever the service is idle: read it with the "
            "backlog. Lag and an empty backlog is an idle service, lag and a backlog a shipper falling behind.",
            "s", [prom(f"modelmon_shipper_lag_seconds{{{ship}}}", per_shipper)],
            links=(runbook("ModelmonShipperBacklog"),), width=8),
        stat(
            "Events lost in the time range",
            "Bytes and files of event files deleted or truncated before the shipper had read them, in the "
            "time range (modelmon_shipper_lost_bytes_total, modelmon_shipper_lost_files_total; counted when "
            "the shipper starts or sees a file shrink). Those events never reach Elasticsearch. Any fires "
            "ModelmonShipperDataLoss.",
            "bytes", [
                prom(f"increase(modelmon_shipper_lost_bytes_total{{{ship}}}[$__range])", f"{per_shipper} bytes"),
                prom(f"increase(modelmon_shipper_lost_files_total{{{ship}}}[$__range])", f"{per_shipper} files"),
            ], overrides=(by_ref("B", prop("unit", "short")),), thresholds=steps((1, "red")),
            links=(runbook("ModelmonShipperDataLoss"),), width=8),
        panel(
            "state-timeline", "Shipper scrape health",
            "Whether Prometheus could scrape each log shipper that exported its metrics within the last day "
            "(up). Down for 5 minutes fires ModelmonShipperDown.",
            "bool", [prom(f"up{{{ship}}} and on(job, instance) "
                          f"last_over_time(modelmon_shipper_backlog_bytes{{{ship}}}[1d])", per_shipper)],
            options={"mergeValues": True, "showValue": "never", "alignValue": "left", "rowHeight": 0.9,
                     "legend": LEGEND, "tooltip": {"mode": "single", "sort": "none"}},
            color={"mode": "thresholds"}, thresholds=steps((1, "green"), base="red"),
            mappings=[{"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0},
                                                    "1": {"text": "up", "color": "green", "index": 1}}}],
            links=(runbook("ModelmonShipperDown"),), width=8),
    ]


def data_dashboard() -> dict:
    feature_mv = f"{MV} {{{{feature}}}}"

    def special_share(title: str, kind: str, values: str, alert: str) -> dict:
        """The share of one kind of special bin per feature, and when its alert fires."""
        series = f"model_feature:modelmon_feature_bin:{kind}_share_1h"
        return timeseries(
            f"{title} per feature (share, 1h)",
            f"Share of each {values} over the hour before each point ({series}). {alert} fires when it exceeds "
            "the training data's share by the model's threshold (5 points unless set) and by more than 3 "
            "standard errors of the share.",
            "percentunit", [prom(f"{series}{{{SEL}}}", feature_mv)], links=(runbook(alert), to_board(LOGS)), width=8)
    output_mv = f"{MV} {{{{output}}}}"
    psi_levels = steps((0.1, "orange"), (0.2, "red"))
    panels = [
        row("Input drift"),
        table(
            "Drift per feature (last hour)",
            "Every input feature's distribution over the last hour against the training data: PSI, "
            "Jensen-Shannon divergence (natural log, 0 to 0.69) and Pearson's chi-square on the reference "
            "bins (recording rules model_feature:modelmon_feature_bin:*_1h). 'of threshold' is PSI divided by "
            "the model's ModelmonFeatureDrift threshold: from 50% the alert warns, from 100% it is critical, "
            "once the hour has 500 values. PSI cells are coloured at the default 0.1 and 0.2. Sort by any "
            "column; click a feature to see its distribution below.",
            "none", [
                prom(f"model_feature:modelmon_feature_bin:psi_1h{{{SEL}}}", table=True),
                prom(f"model_feature:modelmon_feature_bin:psi_1h{{{SEL}}} / ignoring(feature, alert) group_left() "
                     f"{threshold('ModelmonFeatureDrift')}", table=True),
                prom(f"model_feature:modelmon_feature_bin:js_divergence_1h{{{SEL}}}", table=True),
                prom(f"model_feature:modelmon_feature_bin:chi_square_1h{{{SEL}}}", table=True),
                prom(f"model_feature:modelmon_feature_bin:increase_1h{{{SEL}}}", table=True),
            ],
            columns={"model": "model", "version": "version", "feature": "feature", "Value #A": "PSI",
                     "Value #B": "of threshold", "Value #C": "Jensen-Shannon", "Value #D": "chi-square",
                     "Value #E": "values"},
            sort_by="PSI", decimals=3,
            overrides=(
                colored_cells("PSI", "none", psi_levels),
                colored_cells("of threshold", "percentunit", steps((0.5, "orange"), (1, "red"))),
                by_name("values", prop("unit", "short"), prop("decimals", 0)),
                by_name("feature", prop("links", [link(
                    "Distribution of ${__value.raw}",
                    dashboard_url(DATA, "var-feature=${__value.raw}", "${output:queryparam}"))])),
            ),
            links=(runbook("ModelmonFeatureDrift"),), width=24, height=9),
        timeseries(
            "PSI per feature (1h window)",
            "Population stability index of each feature, each point computed over the hour before it "
            "(model_feature:modelmon_feature_bin:psi_1h). Dashed: the model's ModelmonFeatureDrift threshold "
            "(0.2 unless set per model; the warning starts at half of it).",
            "none", [prom(f"model_feature:modelmon_feature_bin:psi_1h{{{SEL}}}", feature_mv),
                     prom(threshold("ModelmonFeatureDrift"), f"threshold {MV}")],
            overrides=(dashed("B"),), links=(runbook("ModelmonFeatureDrift"),), decimals=3),
        timeseries(
            "Jensen-Shannon divergence per feature (1h window)",
            "Jensen-Shannon divergence of each feature against the training data, natural log: 0 is the "
            "same distribution, 0.69 none in common (model_feature:modelmon_feature_bin:js_divergence_1h). "
            "Symmetric and bounded, so features compare more easily than with PSI.",
            "none", [prom(f"model_feature:modelmon_feature_bin:js_divergence_1h{{{SEL}}}", feature_mv)],
            decimals=3),
        barchart(
            "Live vs training distribution: $feature",
            "Share of the chosen feature's values in each reference bin over the last hour "
            "(model_feature_bin:modelmon_feature_bin:share_1h) next to its share in the training data "
            "(modelmon_reference_bin_ratio, deduplicated by model_feature_bin:modelmon_reference_bin_ratio:max). "
            "Numeric bins are training quantiles; __below__ / __above__ are out of the training range, "
            "__unseen__ categories the training data lacked, __missing__ and __invalid__ unusable values. "
            "With several versions selected the shares are averaged; select one to compare it with its own "
            "training data.",
            "percentunit", [
                prom(f'avg by (bin) (model_feature_bin:modelmon_feature_bin:share_1h{{{SEL}, feature="$feature"}})',
                     table=True),
                prom("avg by (bin) (model_feature_bin:modelmon_reference_bin_ratio:max"
                     f'{{{SEL}, feature="$feature"}})', table=True),
            ], transformations=side_by_side("bin", "live (last hour)", "training"), width=24),
        special_share("Missing values", "missing", "feature's values that were absent, null or NaN",
                      "ModelmonFeatureMissing"),
        special_share("Unseen categories", "unseen",
                      "categorical feature's values that are categories the training data did not have",
                      "ModelmonUnseenCategories"),
        special_share("Out of training range", "out_of_range",
                      "numeric feature's values below the training minimum or above its maximum",
                      "ModelmonOutOfRange"),
        timeseries(
            "Mean shift per numeric feature (standard errors, 1h)",
            "How far each numeric feature's mean over the last hour is from its training mean, in standard "
            "errors of that mean (model_feature:modelmon_feature_value:mean_shift_1h). With many values a "
            "real but harmless shift soon reaches large numbers; read it with PSI.",
            "none", [prom(f"model_feature:modelmon_feature_value:mean_shift_1h{{{SEL}}}", feature_mv)],
            decimals=1, width=24),
        row("Predictions"),
        barchart(
            "Live vs training predictions: $output",
            "Share of the chosen output's predictions in each bin over the last hour "
            "(model_output_bin:modelmon_prediction_bin:share_1h) next to its share on the training data "
            "(model_output_bin:modelmon_reference_prediction_bin_ratio:max). Classes are the bins of a "
            "categorical output; __missing__ counts NaN and __invalid__ infinite predictions.",
            "percentunit", [
                prom("avg by (bin) (model_output_bin:modelmon_prediction_bin:share_1h"
                     f'{{{SEL}, output="$output"}})', table=True),
                prom("avg by (bin) (model_output_bin:modelmon_reference_prediction_bin_ratio:max"
                     f'{{{SEL}, output="$output"}})', table=True),
            ], transformations=side_by_side("bin", "live (last hour)", "training")),
        timeseries(
            "Prediction class shares over time: $output (1h)",
            "Share of each class (or bin, for a numeric output) among the chosen output's predictions over "
            "the hour before each point, stacked to 100% "
            "(model_output_bin:modelmon_prediction_bin:share_1h).",
            "percentunit", [prom(f'model_output_bin:modelmon_prediction_bin:share_1h{{{SEL}, output="$output"}}',
                                 f"{MV} {{{{bin}}}}")], stack=True, max=1),
        timeseries(
            "Mean prediction and training band (1h)",
            "Mean of each numeric output over the hour before each point "
            "(model_output:modelmon_prediction_value:mean_1h). Dashed: the training mean plus and minus k "
            "standard errors of an hourly mean, sigma_training / sqrt(predictions in the hour), with k the "
            "model's ModelmonPredictionMeanShift threshold (3 unless set per model), or "
            f"{MEAN_SHIFT_MIN_EFFECT} sigma_training where that is wider. The mean outside the "
            "band for 2 minutes, with 500 predictions in the hour, fires the alert.",
            "none", [
                prom(f"model_output:modelmon_prediction_value:mean_1h{{{SEL}}}", f"mean {output_mv}"),
                prom(f"{band('+')}", f"training mean + k SE {output_mv}"),
                prom(f"{band('-')}", f"training mean - k SE {output_mv}"),
            ], overrides=(dashed("B", "text"), dashed("C", "text")),
            links=(runbook("ModelmonPredictionMeanShift"),)),
        timeseries(
            "Prediction PSI (1h window)",
            "Population stability index of each output's predictions against its predictions on the "
            "training data (model_output:modelmon_prediction_bin:psi_1h). Dashed: the ModelmonPredictionDrift "
            "threshold (0.2 unless set per model).",
            "none", [prom(f"model_output:modelmon_prediction_bin:psi_1h{{{SEL}}}", output_mv),
                     prom(threshold("ModelmonPredictionDrift"), f"threshold {MV}")],
            overrides=(dashed("B"),), links=(runbook("ModelmonPredictionDrift"),), decimals=3),
        timeseries(
            "NaN, infinite or missing predictions (5 min)",
            "Predictions that were NaN, infinite or absent in the 5 minutes before each point "
            "(model_output:modelmon_prediction_bin:nonfinite_increase_5m). Any fires "
            "ModelmonNonFinitePredictions; the events dashboard shows the rows.",
            "short", [prom(f"model_output:modelmon_prediction_bin:nonfinite_increase_5m{{{SEL}}}", output_mv)],
            links=(runbook("ModelmonNonFinitePredictions"), to_board(LOGS))),
        row("Model and quality"),
        table(
            "Model age",
            "Time since each version was trained (model:modelmon_model_trained_timestamp_seconds:age, from "
            "trained_at in its reference profile) and the age at which ModelmonModelStale fires "
            "(30 days unless set per model).",
            "s", [prom(f"model:modelmon_model_trained_timestamp_seconds:age{{{SEL}}}", table=True),
                  prom(f'max without(alert) ({threshold("ModelmonModelStale")})', table=True)],
            columns={"model": "model", "version": "version", "Value #A": "age", "Value #B": "stale after"},
            overrides=(colored_cells("age", "s", steps((2592000, "orange"))),),
            links=(runbook("ModelmonModelStale"),), width=8),
        table(
            "Dependency versions",
            "Installed versions of the packages the monitors report (modelmon_dependency_info) on the "
            "instances serving the selected models. A package upgrade can change predictions without a new "
            "model version.",
            "short", [prom('count by (job, package, version) (modelmon_dependency_info{job=~"$job"} '
                           f"{ON_MODEL})", table=True)],
            columns={"job": "job", "package": "package", "version": "installed", "Value": "instances"},
            links=(runbook("ModelmonDependencyChanged"),), width=6),
        timeseries(
            "Labels joined per hour",
            "Delayed labels joined to their prediction in the hour before each point "
            "(model:modelmon_outcomes:increase_1h), and labels that could not be joined, by reason: "
            "unknown_id (no waiting prediction), invalid, expired (modelmon_outcomes_unmatched_total). "
            "Quality below is measured on the joined ones.",
            "short", [prom(f"model:modelmon_outcomes:increase_1h{{{SEL}}}", f"joined {MV}"),
                      prom("sum without(instance, pod, pid) (increase(modelmon_outcomes_unmatched_total"
                           f"{{{SEL}}}[1h]))", f"unmatched {MV} {{{{reason}}}}")],
            width=10),
        timeseries(
            "Accuracy: estimated, realized and hold-out (1h)",
            "Realized: share of joined labels equal to the predicted class over the hour before each point "
            "(model:modelmon_outcomes:accuracy_1h), for categorical outputs. Estimated: the accuracy the "
            "model's calibrated confidence predicts, no labels needed (model:modelmon_estimated:accuracy_1h, "
            "rows observed with probabilities and a reference calibrated on a hold-out set); it follows "
            "covariate shift but cannot see concept drift, which only the realized line shows. Dashed: the "
            "held-out accuracy from the reference profile (modelmon_reference_score). ModelmonQualityDrop "
            "compares the daily realized accuracy (10% relative drop unless set per model, 200 labels a day), "
            "ModelmonEstimatedQualityDrop the hourly estimate (10%, by 3 standard errors, 500 rows).",
            "percentunit", [
                prom(f"model:modelmon_outcomes:accuracy_1h{{{SEL}}}", f"realized {MV}"),
                prom(f'max without(instance, pod, pid) (modelmon_reference_score{{{SEL}, metric="accuracy"}})',
                     f"hold-out {MV}"),
                prom(f"model:modelmon_estimated:accuracy_1h{{{SEL}}}", f"estimated {MV}"),
            ], overrides=(dashed("B", "text"),),
            links=(runbook("ModelmonQualityDrop"), runbook("ModelmonEstimatedQualityDrop")), max=1),
        timeseries(
            "Mean absolute error vs reference (1h)",
            "Mean absolute error of joined labels over the hour before each point, in the output's own "
            "unit (model:modelmon_outcome_absolute_error:mae_1h), for numeric outputs. Dashed: the held-out "
            "MAE from the reference profile (modelmon_reference_score). ModelmonQualityDrop compares the "
            "daily MAE (10% relative rise unless set per model).",
            "none", [
                prom(f"model:modelmon_outcome_absolute_error:mae_1h{{{SEL}}}", f"MAE {MV}"),
                prom(f'max without(instance, pod, pid) (modelmon_reference_score{{{SEL}, metric="mae"}})',
                     f"reference {MV}"),
            ], overrides=(dashed("B", "text"),), links=(runbook("ModelmonQualityDrop"),)),
        row("Version against version (shadow or canary)"),
        table(
            "Versions side by side",
            "One row per selected version: traffic, failures, latency, the largest input and prediction "
            "drift over the last hour and quality on joined labels. Select the primary and the canary (or "
            "shadow) version of one model to compare them; an empty cell has no data yet (no error, no "
            "label).",
            "none", [
                prom(f"model:modelmon_predictions:rate5m{{{SEL}}}", table=True),
                prom(f"model:modelmon_prediction_errors:ratio_rate5m{{{SEL}}}", table=True),
                prom(f"model:modelmon_prediction_duration_seconds:p95_rate5m{{{SEL}}}", table=True),
                prom(f"max without(feature) (model_feature:modelmon_feature_bin:psi_1h{{{SEL}}})", table=True),
                prom(f"max without(output) (model_output:modelmon_prediction_bin:psi_1h{{{SEL}}})", table=True),
                prom(f"model:modelmon_outcomes:accuracy_1h{{{SEL}}}", table=True),
                prom(f"model:modelmon_outcome_absolute_error:mae_1h{{{SEL}}}", table=True),
            ],
            columns={"model": "model", "version": "version", "Value #A": "predictions/s",
                     "Value #B": "error ratio", "Value #C": "p95 latency", "Value #D": "max feature PSI",
                     "Value #E": "prediction PSI", "Value #F": "accuracy (1h)", "Value #G": "MAE (1h)"},
            decimals=3,
            overrides=(by_name("predictions/s", prop("unit", "cps")),
                       colored_cells("error ratio", "percentunit", steps((0.05, "red"))),
                       by_name("p95 latency", prop("unit", "s")),
                       colored_cells("max feature PSI", "none", psi_levels),
                       colored_cells("prediction PSI", "none", psi_levels),
                       by_name("accuracy (1h)", prop("unit", "percentunit"))),
            links=(to_board(OPS),), width=14),
        barchart(
            "Predictions by version: $output (share, 1h)",
            "Share of the chosen output's predictions in each bin over the last hour, one bar per version "
            "(model_output_bin:modelmon_prediction_bin:share_1h): a canary predicting differently from the "
            "primary on the same traffic shows here first. Select one model.",
            "percentunit", [prom(f'model_output_bin:modelmon_prediction_bin:share_1h{{{SEL}, output="$output"}}',
                                 table=True)],
            transformations=({"id": "groupingToMatrix",
                              "options": {"columnField": "version", "rowField": "bin", "valueField": "Value"}},),
            width=10),
    ]
    variables = [
        prometheus_variable(), *model_variables(),
        query_variable("feature", "Feature", f"label_values(modelmon_reference_bin_ratio{{{SEL}}}, feature)",
                       "The input feature whose distribution the bar chart shows.", multi=False),
        query_variable("output", "Output", f"label_values(modelmon_reference_prediction_bin_ratio{{{SEL}}}, output)",
                       "The model output whose prediction distribution and class shares are shown.", multi=False),
    ]
    return dashboard(
        DATA, "Does live traffic still look like the training data, are predictions sane, is the model "
        "fresh and still good? Drift, data quality, predictions, quality and version comparison.",
        variables, panels, (OPS, LOGS))


def band(sign: str) -> str:
    """Training mean of each output plus or minus what ModelmonPredictionMeanShift tolerates:
    k standard errors of an hourly mean, or MEAN_SHIFT_MIN_EFFECT training standard deviations
    where that is wider."""
    k = threshold("ModelmonPredictionMeanShift")
    # predictions in the hour: the value summary's count over both signs
    stddevs = (f"clamp_min({k} * on(job, model, version) group_right() (1 / sqrt(sum without(instance, pod, pid, "
               f"{SIGN}) (increase(modelmon_prediction_value_count{{{SEL}, {SIGN}=~\"{POSITIVE}|{NEGATIVE}\"}}[1h])))), "
               f"{MEAN_SHIFT_MIN_EFFECT})")
    return (f"max without(instance, pod, pid) (modelmon_reference_prediction_mean{{{SEL}}}) {sign} "
            f"max without(instance, pod, pid) (modelmon_reference_prediction_stddev{{{SEL}}}) * {stddevs}")


def logs_dashboard() -> dict:
    anomalous = f"modelmon.anomalous:true AND {LUCENE_MODEL}"
    failed = f"event.outcome:failure AND {LUCENE_MODEL}"
    flags = {"missing": "modelmon.flags.missing:*", "unseen": "modelmon.flags.unseen:*",
             "out of range": "modelmon.flags.out_of_range:*", "invalid": "modelmon.flags.invalid:*",
             "non-finite prediction": "modelmon.flags.nonfinite_prediction:true"}

    def top(title: str, field: str, description: str, alert: str) -> dict:
        return barchart(title, description, "short", [lucene(LUCENE_MODEL, COUNT, terms("2", field))],
                        transformations=(), horizontal=True, links=(runbook(alert), to_board(DATA)), width=8)

    def latest(title: str, description: str, query: str, columns: dict[str, str], **kwargs) -> dict:
        return panel(
            "table", title, description, "short", [lucene(query, raw_data())],
            options={"showHeader": True, "cellHeight": "sm",
                     "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
                     "sortBy": [{"displayName": "time", "desc": True}]},
            custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
            transformations=pick(columns), width=24, height=10, **kwargs)

    panels = [
        row("Events"),
        timeseries(
            "Prediction events by outcome",
            "Prediction events per time bucket in logs-modelmon.predictions-*, by event.outcome (success or "
            "failure). Events are sampled (EventLog sample_rate): ordinary rows in proportion, every "
            "anomalous row and every failed prediction always.",
            "short", [lucene(LUCENE_MODEL, COUNT, terms("3", "event.outcome"), date_histogram("2"))],
            bars=True, legend=LEGEND, links=(to_board(OPS),), width=12),
        timeseries(
            "Events with data-quality flags, by flag",
            "Events flagged anomalous (modelmon.anomalous:true) per time bucket, by flag: a missing, "
            "invalid or unseen value, a value out of the training range, a NaN or infinite prediction. "
            "A row can carry several flags.",
            "short", [lucene(anomalous, COUNT,
                             {"id": "3", "type": "filters",
                              "settings": {"filters": [{"query": q, "label": label} for label, q in flags.items()]}},
                             date_histogram("2"))],
            bars=True, legend=LEGEND, links=(to_board(DATA),), width=12),
        top("Top missing features", "modelmon.flags.missing",
            "Features most often absent, null or NaN in the events of the time range "
            "(terms of modelmon.flags.missing).", "ModelmonFeatureMissing"),
        top("Top features with unseen categories", "modelmon.flags.unseen",
            "Categorical features most often holding a category the training data did not have "
            "(terms of modelmon.flags.unseen).", "ModelmonUnseenCategories"),
        top("Top features out of training range", "modelmon.flags.out_of_range",
            "Numeric features most often below the training minimum or above its maximum "
            "(terms of modelmon.flags.out_of_range).", "ModelmonOutOfRange"),
        latest(
            "Latest anomalous events",
            "The 100 latest events with a data-quality flag: which features were missing, unseen, out of "
            "range or invalid, and what the model predicted. event.id is the prediction id (the key of "
            "delayed labels); trace.id joins the request's trace. The full inputs (modelmon.inputs) are in "
            "Explore.",
            anomalous,
            {"@timestamp": "time", "modelmon.model": "model", "modelmon.version": "version", "event.id": "event id",
             "modelmon.flags.missing": "missing", "modelmon.flags.unseen": "unseen",
             "modelmon.flags.out_of_range": "out of range", "modelmon.flags.invalid": "invalid",
             "modelmon.flags.nonfinite_prediction": "non-finite prediction",
             "modelmon.prediction.value": "prediction", "modelmon.prediction.label": "class",
             "trace.id": "trace id"},
            links=(to_board(DATA),)),
        latest(
            "Latest failed predictions",
            "The 100 latest predictions whose predict call raised (event.outcome:failure), with the exception "
            "class and message, for ModelmonHighErrorRate.",
            failed,
            {"@timestamp": "time", "modelmon.model": "model", "modelmon.version": "version", "event.id": "event id",
             "error.type": "error", "error.message": "message", "trace.id": "trace id"},
            links=(runbook("ModelmonHighErrorRate"), to_board(OPS))),
    ]
    variables = [datasource_variable("datasource", "Data source", "elasticsearch", ELASTICSEARCH_UID, "Elasticsearch"),
                 prometheus_variable("metrics"), *model_variables("metrics")]
    return dashboard(
        LOGS, "The prediction events in Elasticsearch (logs-modelmon.predictions-*): which rows were "
        "anomalous or failed, and why. Models and versions are listed from Prometheus.",
        variables, panels, (OPS, DATA))


def dashboards() -> dict[str, dict]:
    """File name -> dashboard, for every dashboard modelmon ships."""
    return {f"{board[1]}.json": build() for board, build in
            ((OPS, ops_dashboard), (DATA, data_dashboard), (LOGS, logs_dashboard))}


def render(board: dict) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, board in dashboards().items():
        (OUT / name).write_text(render(board))
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
