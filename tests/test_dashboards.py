"""The Grafana dashboards and their provisioning.

Grafana cannot run here, so the dashboards are checked the ways that do not need it:

- a linter in the spirit of grafana/dashboard-linter (rules written here), and a
  deliberately broken dashboard for each rule, which it must reject;
- every metric a query names is exported by modelmon or recorded by prometheus/rules;
- the JSON files are what grafana/generate.py writes;
- alerts' dashboard_url annotations and the dashboards' own links open existing
  dashboards with existing variables, and runbook links existing runbooks;
- every Prometheus query of every panel, with the variables substituted as Grafana
  does, returns series from a real Prometheus (the project's rule files, 1 s scrape and
  evaluation) scraping tests/fixtures/dashboard_service.py and the real log shipper it
  runs, in the jobs of prometheus/prometheus.yml;
- every Elasticsearch query, translated to the search Grafana's backend sends, returns
  hits from real prediction events the same service wrote and the shipper delivered.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from elastic import elastic, es, namespace  # noqa: F401 (fixtures)
from grafana_queries import prometheus_targets, selections, substitute, variable_query
from servers import free_port, rule_files_every, start_prometheus, wait_until

from modelmon import CONTRACT, exported_samples
from modelmon.pipeline.shipper import Shipper, ShipperConfig, data_stream

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "grafana"
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
SERVICE = REPO / "tests" / "fixtures" / "dashboard_service.py"
UIDS = {"model-service.json": "modelmon-ops", "model-data.json": "modelmon-data", "model-events.json": "modelmon-logs"}
RUNBOOK_URL = re.compile(r"\$\{runbook_base_url\}/(\w+)\.md")


def load_generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()
DASHBOARDS = {name: json.loads((GRAFANA / "dashboards" / name).read_text()) for name in UIDS}
RULES = [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]
RECORDED = {rule["record"] for rule in RULES if "record" in rule}
ALERTS = {rule["alert"] for rule in RULES if "alert" in rule}

# -- reading PromQL ------------------------------------------------------------------------

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>\d+(?:ms|[smhdwy])\b)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>[(){},])
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=])
""", re.VERBOSE)
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
                "count_values", "limitk", "limit_ratio"}
MODIFIERS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = AGGREGATIONS | MODIFIERS | {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
RATE_FUNCTIONS = {"rate", "irate", "increase"}


@dataclass
class Selector:
    """A vector selector: metric name, label matchers, range and the function it is passed to."""

    name: str
    matchers: dict[str, str]  # label -> operator and quoted value, e.g. '=~"$job"'
    range: str | None
    function: str | None


def tokens(expr: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[position:position + 30]!r} in {expr!r}")
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
        position = match.end()
    return found


def read_matchers(items: list[tuple[str, str]], i: int, selector: Selector) -> int:
    """Read the label matchers and the range that follow a selector's name at ``items[i]``; the
    index after them."""
    if i < len(items) and items[i][1] == "{":
        while items[i][1] != "}":
            if items[i][0] == "name":
                selector.matchers[items[i][1]] = items[i + 1][1] + items[i + 2][1]
                i += 2
            i += 1
        i += 1
    if i < len(items) and items[i][0] == "range":
        selector.range = items[i][1]
        i += 1
    return i


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of a PromQL expression, each with its innermost enclosing function.
    A selector without a name, {__name__=~"a|b", ...}, counts as one selector per name."""
    items = tokens(expr)
    calls: list[str | None] = []  # open parentheses: the function or aggregation they belong to, innermost last
    pending = None  # a function or aggregation name waiting for its parenthesis
    found, i = [], 0
    while i < len(items):
        kind, text = items[i]
        following = items[i + 1][1] if i + 1 < len(items) else ""
        if kind == "name" and text in MODIFIERS and following == "(":
            i = items.index(("punct", ")"), i)  # a list of label names
        elif kind == "name" and (text in AGGREGATIONS or following == "("):
            pending = text
        elif text == "(":
            calls.append(pending)
            pending = None
        elif text == ")":
            calls.pop()
        elif kind == "name" and text not in KEYWORDS:
            selector = Selector(text, {}, None, calls[-1] if calls else None)
            i = read_matchers(items, i + 1, selector)
            found.append(selector)
            continue
        elif text == "{":
            selector = Selector("", {}, None, calls[-1] if calls else None)
            i = read_matchers(items, i, selector)
            names = re.fullmatch(r'=~?"([\w:|]+)"', selector.matchers.pop("__name__", ""))
            if names is None:
                raise ValueError(f"cannot read the metric names of a selector in {expr!r}")
            found += [Selector(name, dict(selector.matchers), selector.range, selector.function)
                      for name in names.group(1).split("|")]
            continue
        i += 1
    return found


# -- the lint rules ------------------------------------------------------------------------

PRODUCED = exported_samples() | RECORDED | {"up", "ALERTS", "ALERTS_FOR_STATE"}
COUNTERS = {sample for spec in CONTRACT if spec.kind != "gauge" for sample in spec.samples}
# Units of Grafana's value formats (packages/grafana-data/src/valueFormats/categories.ts)
# that fit monitoring data; extend when a panel needs another.
UNITS = {"none", "short", "percent", "percentunit", "s", "ms", "µs", "ns", "m", "h", "d", "dtdurations",
         "dtdurationms", "bytes", "decbytes", "bits", "Bps", "binBps", "reqps", "rps", "wps", "ops", "cps", "iops",
         "cpm", "opm", "rpm", "wpm", "bool", "bool_yes_no", "bool_on_off", "dateTimeAsIso", "dateTimeFromNow",
         "hertz", "sci", "locale", "string"}


def produced(name: str) -> bool:
    return name in PRODUCED or name.startswith("process_")


def is_counter(name: str) -> bool:
    return name in COUNTERS or name.endswith("_total")


def check_promql(expr: str, where: str, *, job_matcher: bool = True) -> Iterator[str]:
    for s in selectors(expr):
        if not produced(s.name):
            yield f"{where}: nothing produces {s.name}"
        if job_matcher and s.matchers.get("job") != '=~"$job"':
            yield f'{where}: {s.name} has no job=~"$job" matcher'
        if is_counter(s.name) and (s.function not in RATE_FUNCTIONS or s.range is None):
            yield f"{where}: counter {s.name} is not inside rate(), irate() or increase()"
        if s.function in RATE_FUNCTIONS and not is_counter(s.name):
            yield f"{where}: {s.function}() of {s.name}, which is not a counter"
        if s.function in ("rate", "irate") and s.range != "[$__rate_interval]":
            yield f"{where}: {s.function}() of {s.name} should use [$__rate_interval], not {s.range}"


def lint(board: dict, uid: str) -> list[str]:
    """Every rule the dashboard breaks (empty when it passes)."""
    problems = []
    if board.get("uid") != uid:
        problems.append(f"uid is {board.get('uid')!r}, expected the stable uid {uid!r}")
    if board.get("schemaVersion") != GENERATOR.SCHEMA_VERSION:
        problems.append(f"schemaVersion {board.get('schemaVersion')}, not {GENERATOR.SCHEMA_VERSION}")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    datasources = {f"${{{v['name']}}}": v["query"] for v in variables.values() if v["type"] == "datasource"}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("no datasource variable")
    for name in ("job", "model", "version"):
        variable = variables.get(name)
        if variable is None or variable["type"] != "query":
            problems.append(f"no {name} query variable")
            continue
        if not (variable["multi"] and variable["includeAll"]):
            problems.append(f"variable {name} is not multi-select with All")
    for variable in variables.values():
        if variable["type"] != "query":
            continue
        if variable["refresh"] != 2:
            problems.append(f"variable {variable['name']} does not refresh on time range change")
        if variable["datasource"]["uid"] not in datasources:
            problems.append(f"variable {variable['name']} does not use a datasource variable")
        selector, _ = variable_query(variable)
        problems += check_promql(selector, f"variable {variable['name']}", job_matcher=variable["name"] != "job")
    ids = [p["id"] for p in board["panels"]]
    problems += [f"duplicate panel id {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for p in board["panels"]:
        if p["type"] == "row":
            continue
        where = f"panel {p.get('title')!r}"
        if not p.get("title") or not p.get("description"):
            problems.append(f"{where}: no title or no description")
        units = [p["fieldConfig"]["defaults"].get("unit")] + [
            prop["value"] for o in p["fieldConfig"]["overrides"] for prop in o["properties"] if prop["id"] == "unit"]
        problems += [f"{where}: unit {unit!r} is not a Grafana unit" for unit in units if unit not in UNITS]
        for target in [p, *p["targets"]]:
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: does not use $datasource")
        kind = datasources.get(p["datasource"]["uid"])
        for target in p["targets"]:
            if kind == "prometheus":
                problems += check_promql(target["expr"], f"{where} query {target['refId']}")
            elif kind == "elasticsearch" and not (
                    "modelmon.model:$model" in target["query"] and "modelmon.version:$version" in target["query"]):
                problems.append(f"{where} query {target['refId']}: not filtered by $model and $version")
    return problems


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboards_pass_the_lint_rules(name):
    assert lint(DASHBOARDS[name], UIDS[name]) == []


def ops_panel(board: dict, title: str) -> dict:
    return next(p for p in board["panels"] if p.get("title") == title)


def set_expr(title: str, expr: str) -> Callable[[dict], None]:
    def mutate(board: dict) -> None:
        ops_panel(board, title)["targets"][0]["expr"] = expr
    return mutate


def remove_variable(name: str) -> Callable[[dict], None]:
    def mutate(board: dict) -> None:
        board["templating"]["list"] = [v for v in board["templating"]["list"] if v["name"] != name]
    return mutate


def set_in_panel(title: str, change: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda board: change(ops_panel(board, title))


PREDICTIONS = "Predictions per second"
BROKEN = {
    "no datasource variable": (remove_variable("datasource"), "no datasource variable"),
    "no job variable": (remove_variable("job"), "no job query variable"),
    "fixed datasource": (set_in_panel(PREDICTIONS, lambda p: p["targets"][0].update(
        datasource={"type": "prometheus", "uid": "modelmon-prometheus"})), "does not use $datasource"),
    "rate over a gauge": (set_expr(PREDICTIONS, 'rate(modelmon_http_requests_in_progress{job=~"$job"}'
                                                "[$__rate_interval])"), "which is not a counter"),
    "counter without rate": (set_expr(PREDICTIONS, 'sum(modelmon_predictions_total{job=~"$job"})'),
                             "is not inside rate()"),
    "fixed rate window": (set_expr(PREDICTIONS, 'rate(modelmon_predictions_total{job=~"$job"}[5m])'),
                          "should use [$__rate_interval]"),
    "no job matcher": (set_expr(PREDICTIONS, "model:modelmon_predictions:rate5m"), 'no job=~"$job" matcher'),
    "unknown metric": (set_expr(PREDICTIONS, 'model:modelmon_prediction:rate5m{job=~"$job"}'),
                       "nothing produces model:modelmon_prediction:rate5m"),
    "no unit": (set_in_panel(PREDICTIONS, lambda p: p["fieldConfig"]["defaults"].pop("unit")), "is not a Grafana unit"),
    "invalid override unit": (set_in_panel("Error ratio", lambda p: p["fieldConfig"]["overrides"].append(
        {"matcher": {"id": "byFrameRefID", "options": "A"}, "properties": [{"id": "unit", "value": "furlongs"}]})),
        "unit 'furlongs'"),
    "no description": (set_in_panel(PREDICTIONS, lambda p: p.pop("description")), "no title or no description"),
    "duplicate panel id": (lambda board: board["panels"][2].update(id=board["panels"][1]["id"]), "duplicate panel id"),
    "changed uid": (lambda board: board.update(uid="abc123"), "expected the stable uid"),
    "variable not refreshed": (lambda board: board["templating"]["list"][2].update(refresh=1),
                               "does not refresh on time range change"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_linter_rejects_a_broken_dashboard(case):
    mutate, expected = BROKEN[case]
    board = copy.deepcopy(DASHBOARDS["model-service.json"])
    mutate(board)
    problems = lint(board, "modelmon-ops")
    assert any(expected in problem for problem in problems), problems


def test_selectors_are_read_with_their_function_and_matchers():
    found = selectors('histogram_quantile(0.95, sum by (le) (rate(a_bucket{job=~"$job", x!="1"}[$__rate_interval]))) '
                      '/ ignoring(le) group_left() sum without(pid) (b{job=~"$job"}) > 1e-4 and c offset 1h')
    assert [(s.name, s.function, s.range) for s in found] == [
        ("a_bucket", "rate", "[$__rate_interval]"), ("b", "sum", None), ("c", None, None)]
    assert found[0].matchers == {"job": '=~"$job"', "x": '!="1"'}
    found = selectors('{__name__=~"a_total|b:c", job=~"$job"} and on(job) count_over_time({__name__="d"}[5m])')
    assert [(s.name, s.matchers, s.range, s.function) for s in found] == [
        ("a_total", {"job": '=~"$job"'}, None, None), ("b:c", {"job": '=~"$job"'}, None, None),
        ("d", {}, "[5m]", "count_over_time")]
    with pytest.raises(ValueError, match="metric names"):
        selectors('{__name__=~"modelmon_.*"}')


def test_every_metric_a_dashboard_names_is_produced():
    named = {s.name for board in DASHBOARDS.values() for p in board["panels"] for t in p.get("targets", [])
             if "expr" in t for s in selectors(t["expr"])}
    named |= {s.name for board in DASHBOARDS.values() for v in board["templating"]["list"] if v["type"] == "query"
              for s in selectors(variable_query(v)[0])}
    assert len(named) > 40  # the reader found the selectors
    assert sorted(name for name in named if not produced(name)) == []


def test_dashboard_files_are_what_the_generator_writes():
    generated = GENERATOR.dashboards()
    assert sorted(generated) == sorted(UIDS)
    for name, board in generated.items():
        assert (GRAFANA / "dashboards" / name).read_text() == GENERATOR.render(board), (
            f"grafana/dashboards/{name} is stale: run python grafana/generate.py")


# -- provisioning and links ----------------------------------------------------------------

def provisioned_datasources() -> dict[str, dict]:
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "modelmon.yml").read_text())
    assert config["apiVersion"] == 1
    return {ds["uid"]: ds for ds in config["datasources"]}


def test_datasources_have_fixed_uids_and_no_secrets():
    sources = provisioned_datasources()
    assert set(sources) == {"modelmon-prometheus", "modelmon-elasticsearch"}
    prometheus, elasticsearch = sources["modelmon-prometheus"], sources["modelmon-elasticsearch"]
    assert (prometheus["type"], prometheus["url"], prometheus["access"]) == ("prometheus", "http://prometheus:9090",
                                                                             "proxy")
    scrape_interval = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape_interval  # $__rate_interval builds on it
    assert (elasticsearch["type"], elasticsearch["url"]) == ("elasticsearch", "http://elasticsearch:9200")
    assert elasticsearch["jsonData"]["timeField"] == "@timestamp"
    assert elasticsearch["jsonData"]["index"] == "logs-modelmon.predictions-*"
    assert fnmatch(data_stream("default"), elasticsearch["jsonData"]["index"])
    credentials = [elasticsearch["basicAuthUser"], *elasticsearch["secureJsonData"].values()]
    assert all(re.fullmatch(r"\$\{?ELASTICSEARCH_[A-Z]+\}?", value) for value in credentials), credentials
    for board in DASHBOARDS.values():
        for variable in board["templating"]["list"]:
            if variable["type"] == "datasource":
                assert sources[variable["current"]["value"]]["type"] == variable["query"]


def test_dashboards_load_into_the_modelmon_folder_read_only():
    config = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "modelmon.yml").read_text())
    (provider,) = config["providers"]
    assert (provider["type"], provider["folder"], provider["allowUiUpdates"]) == ("file", "modelmon", False)
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert re.fullmatch(r"\d+\.\d+\.\d+", (GRAFANA / "VERSION").read_text().strip())


def slug(title: str) -> str:
    """The URL slug Grafana derives from a dashboard title."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


BY_UID = {board["uid"]: board for board in DASHBOARDS.values()}


def variable_names(board: dict) -> set[str]:
    return {v["name"] for v in board["templating"]["list"]}


def check_dashboard_link(url: str, source: dict) -> None:
    uid, path_slug, query = re.fullmatch(r"/d/([\w-]+)/([\w-]+)\?(.*)", url).groups()
    assert uid in BY_UID and path_slug == slug(BY_UID[uid]["title"]), url
    for name in re.findall(r"\$\{(\w+):queryparam\}", query):
        assert name in variable_names(source) and name in variable_names(BY_UID[uid]), (url, name)
    for name in re.findall(r"(?:^|&)var-(\w+)=", query):
        assert name in variable_names(BY_UID[uid]), (url, name)


def test_alert_dashboard_links_open_these_dashboards():
    linked = {}
    for rule in RULES:
        if "alert" in rule:
            url = rule["annotations"]["dashboard_url"]
            assert url.startswith("{{ $externalLabels.grafana_url }}/d/"), url
            path = url.removeprefix("{{ $externalLabels.grafana_url }}")
            uid, path_slug, query = re.fullmatch(r"/d/([\w-]+)/([\w-]+)\?(.*)", path).groups()
            assert uid in BY_UID and path_slug == slug(BY_UID[uid]["title"]), (rule["alert"], url)
            assert {n for n in re.findall(r"var-(\w+)=", query)} <= variable_names(BY_UID[uid]), (rule["alert"], url)
            linked[rule["alert"]] = uid
    assert set(linked.values()) == {"modelmon-ops", "modelmon-data"}
    assert linked["ModelmonHighLatency"] == "modelmon-ops" and linked["ModelmonFeatureDrift"] == "modelmon-data"


def links(board: dict) -> Iterator[str]:
    """Every URL a dashboard links to: dashboard, panel and field links."""
    yield from (shown["url"] for shown in board["links"])
    for p in board["panels"]:
        yield from (shown["url"] for shown in p.get("links", []))
        for override in p.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "links":
                    yield from (shown["url"] for shown in prop["value"])


def test_dashboard_links_open_dashboards_and_runbooks_that_exist():
    runbooks = set()
    for board in DASHBOARDS.values():
        for url in links(board):
            if url.startswith("/d/"):
                check_dashboard_link(url, board)
            elif match := RUNBOOK_URL.fullmatch(url):
                runbooks.add(match.group(1))
    assert runbooks <= ALERTS
    assert sorted(alert for alert in runbooks if not (REPO / "docs" / "runbooks" / f"{alert}.md").is_file()) == []
    assert len(runbooks) >= 15  # most alerts are one click away from the panel showing their signal


def test_runbook_links_default_to_the_runbook_server_prometheus_links_too():
    external = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["global"]["external_labels"]
    for board in DASHBOARDS.values():
        (variable,) = [v for v in board["templating"]["list"] if v["name"] == "runbook_base_url"]
        assert variable["type"] == "constant" and variable["query"] == external["runbook_base_url"]
        assert "${runbook_base_url}/" in list(links(board))  # the index of all runbooks


# -- every query against real servers ------------------------------------------------------

@dataclass
class Service:
    address: str
    events: Path
    shipper: str  # the address of its log shipper's metrics


def serving(port: int, sample: bytes) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return sample in response.read()
    except OSError:
        return False


@pytest.fixture(scope="module")
def service(tmp_path_factory, elastic, es) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("dashboard-service")
    port, shipper_port, log = free_port(), free_port(), directory / "service.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, str(SERVICE), str(port), str(directory / "events"), elastic.url,
                                    namespace(), str(shipper_port)], stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        return serving(port, b"modelmon_outcomes_total{") and serving(shipper_port, b"modelmon_shipper_backlog_bytes")

    try:
        wait_until(lambda: ready() or process.poll() is not None, 60, "the dashboard service and its shipper")
        assert process.poll() is None, log.read_text()
        yield Service(f"127.0.0.1:{port}", directory / "events", f"127.0.0.1:{shipper_port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory):
    targets = {"modelmon": service.address, "modelmon-shipper": service.shipper}
    shipped = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert sorted(targets) == sorted(job["job_name"] for job in shipped)  # the jobs of prometheus.yml
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address]}]}
                           for job, address in targets.items()],
    }
    # Every group every second: the panels only need series, whatever the shipped intervals
    # (the 1m groups that tile minutes and the 4m 1d groups would take minutes to fill them).
    with start_prometheus(config, rule_files_every(tmp_path_factory.mktemp("rules"), RULE_FILES)) as prom:
        yield prom


def empty_queries(prom) -> list[str]:
    """The panel queries that return no series for some selection of the variables."""
    empty = []
    for board in DASHBOARDS.values():
        targets = list(prometheus_targets(board))
        if not targets:
            continue
        choices = list(selections(prom, board))
        if not choices:
            empty.append(f"{board['title']}: a variable has no values yet")
        for values in choices:
            for where, target in targets:
                expr = substitute(target["expr"], values)
                if not prom.query(expr):
                    empty.append(f"{where}: {expr}")
    return sorted(set(empty))


@pytest.mark.timeout(330)
def test_every_prometheus_query_returns_series(prometheus):
    started = time.monotonic()
    # with every group evaluated every second the panels fill within seconds (the shipped 1m,
    # 2m and 4m groups took minutes)
    wait_until(lambda: not empty_queries(prometheus), 270, "every panel query to return series", interval=0.5,
               details=lambda: "\n".join(empty_queries(prometheus)))
    queries = sum(1 for board in DASHBOARDS.values() for _ in prometheus_targets(board))
    print(f"{queries} panel queries return series after {time.monotonic() - started:.0f}s")
    firing = prometheus.query('ALERTS{alertstate="firing", alertname="ModelmonNonFinitePredictions"}')
    assert {(a["metric"]["model"], a["metric"]["version"]) for a in firing} == {("dash-house", "1.1")}
    # The shipper dead-lettered the service's one corrupt line; nothing else.
    firing = prometheus.wait_for('ALERTS{alertstate="firing", alertname="ModelmonShipperRejectedDocuments"}', 30)
    assert {(a["metric"]["job"], a["metric"]["kind"]) for a in firing} == {("modelmon-shipper", "corrupt")}
    # The ops dashboard's job variable lists the shipper's job: the pipeline alerts' links select it.
    (job,) = [v for v in DASHBOARDS["model-service.json"]["templating"]["list"] if v["name"] == "job"]
    selector, label = variable_query(job)
    listed = prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": selector})["data"]
    assert sorted(listed) == ["modelmon", "modelmon-shipper"]


def search_body(target: dict, query: str, start_ms: int, end_ms: int, time_field: str) -> dict:
    """The search Grafana's Elasticsearch backend sends for a panel query
    (grafana/grafana pkg/tsdb/elasticsearch/data_query.go), with a 1m date histogram."""
    body = {"size": 0, "query": {"bool": {"filter": [
        {"range": {time_field: {"gte": start_ms, "lte": end_ms, "format": "epoch_millis"}}},
        {"query_string": {"analyze_wildcard": True, "query": query}},
    ]}}}
    metric = target["metrics"][0]
    if metric["type"] == "raw_data":
        body["size"] = int(metric["settings"]["size"])
        body["sort"] = [{time_field: {"order": "desc", "unmapped_type": "boolean"}}, {"_doc": {"order": "desc"}}]
        return body
    assert metric["type"] == "count", metric
    parent = body
    for bucket in target["bucketAggs"]:
        settings = bucket["settings"]
        if bucket["type"] == "date_histogram":
            agg = {"date_histogram": {"field": bucket["field"], "fixed_interval": "1m",
                                      "min_doc_count": int(settings["min_doc_count"]),
                                      "extended_bounds": {"min": start_ms, "max": end_ms}, "format": "epoch_millis"}}
        elif bucket["type"] == "terms":
            agg = {"terms": {"field": bucket["field"], "size": int(settings["size"]),
                             "min_doc_count": int(settings["min_doc_count"]),
                             "order": {settings["orderBy"]: settings["order"]}}}
        else:
            assert bucket["type"] == "filters", bucket
            agg = {"filters": {"filters": {f["label"]: {"query_string": {"query": f["query"], "analyze_wildcard": True}}
                                           for f in settings["filters"]}}}
        parent.setdefault("aggs", {})[bucket["id"]] = agg
        parent = agg
    return body


def innermost_counts(aggregations: dict) -> Iterator[int]:
    """doc_count of every innermost bucket of a (nested) aggregation answer."""
    for answer in aggregations.values():
        buckets = answer["buckets"]
        for bucket in buckets.values() if isinstance(buckets, dict) else buckets:
            nested = {k: v for k, v in bucket.items() if isinstance(v, dict) and "buckets" in v}
            yield from innermost_counts(nested) if nested else [bucket["doc_count"]]


def events_of(client, stream: str, query: str) -> int:
    """Events in the data stream matching a Lucene query (0 before the stream exists)."""
    client.indices.refresh(index=stream, ignore_unavailable=True)
    return client.count(index=stream, query={"query_string": {"query": query}}, ignore_unavailable=True)["count"]


@pytest.mark.timeout(240)
def test_every_elasticsearch_query_returns_hits(service, prometheus, es, tmp_path):
    stream_namespace = namespace()
    stream = data_stream(stream_namespace)
    shipper = Shipper(es, ShipperConfig(service.events, namespace=stream_namespace, state_dir=tmp_path / "state"))
    shipper.start()
    try:
        wait_until(lambda: all(events_of(es, stream, q) > 0 for q in (
            "event.outcome:failure", "modelmon.flags.missing:*", "modelmon.flags.unseen:*",
            "modelmon.flags.out_of_range:*", "modelmon.flags.nonfinite_prediction:true")), 90,
            "shipped events of every kind")
    finally:
        shipper.stop()
    settings = provisioned_datasources()["modelmon-elasticsearch"]["jsonData"]
    index, time_field = settings["index"], settings["timeField"]
    board = DASHBOARDS["model-events.json"]
    end_ms = int(time.time() * 1000) + 60_000
    start_ms = end_ms - 30 * 60_000
    values = wait_until(lambda: next(selections(prometheus, board, lucene=True), None), 60, "the variables' values")
    assert values["model"] == '("dash\\-churn" OR "dash\\-house")'
    fields = set()
    for p in board["panels"]:
        for target in p.get("targets", []):
            where = f"{p['title']} / {target['refId']}"
            body = search_body(target, substitute(target["query"], values), start_ms, end_ms, time_field)
            answer = es.search(index=index, **body)
            assert answer["hits"]["total"]["value"] > 0, where
            if "aggs" in body:
                assert max(innermost_counts(answer["aggregations"])) > 0, where
            else:
                assert {hit["_source"]["modelmon.model"] for hit in answer["hits"]["hits"]} <= {
                    "dash-house", "dash-churn"}, where
            fields |= {b["field"] for b in target["bucketAggs"] if "field" in b}
        for transformation in p.get("transformations", []):
            if transformation["id"] == "filterFieldsByName":
                fields |= set(transformation["options"]["include"]["names"])
    mapped = es.field_caps(index=index, fields=sorted(fields))["fields"]
    assert sorted(fields - set(mapped)) == []
