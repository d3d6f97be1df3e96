"""elk/: the Kibana saved objects hold together, fit Kibana 8.19's import format (which
Kibana 9.x also imports, migrating objects of the previous major), and name only fields that
real events map; every search and visualization finds data in them. The events are in a node
of the current line (9.x), and in `make test`'s second run of 8.19.

Kibana itself cannot run here, so each saved object is checked against Elasticsearch:
its fields in ``_field_caps`` of a data stream filled by the shipper, its query and
aggregations run as the equivalent Elasticsearch request.
"""
from __future__ import annotations

import json
import re
from fnmatch import fnmatch

import pytest
from elastic import ROOT, elastic, es, namespace, write_events  # noqa: F401 (fixtures)

from modelmon.pipeline.shipper import Shipper, ShipperConfig

KIBANA = ROOT / "elk" / "kibana"
ELASTICSEARCH = ROOT / "elk" / "elasticsearch"
# Attributes Kibana 8.19 accepts for a dashboard (its saved-object schema forbids others).
DASHBOARD_ATTRIBUTES = {
    "title", "description", "kibanaSavedObjectMeta", "timeRestore", "timeFrom", "timeTo", "refreshInterval",
    "controlGroupInput", "panelsJSON", "optionsJSON", "hits", "version",
}  # fmt: skip
# Newest migration of each type that Kibana 8.19 can take an object from (import refuses newer).
LATEST_MIGRATION = {"index-pattern": (8, 0, 0), "search": (8, 0, 0), "lens": (8, 9, 0), "dashboard": (8, 9, 0)}
FIELD_KINDS = {"date": {"date"}, "number": {"long", "double", "integer", "float"}, "string": {"keyword"}}


def saved_objects() -> list[dict]:
    return [json.loads(line) for f in sorted(KIBANA.glob("*.ndjson")) for line in f.read_text().splitlines()]


def of_type(kind: str) -> list[dict]:
    return [o for o in saved_objects() if o["type"] == kind]


def search_source(obj: dict) -> dict:
    return json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def lens_layers(obj: dict) -> dict:
    return obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]


def panels(dashboard: dict) -> list[dict]:
    return json.loads(dashboard["attributes"]["panelsJSON"])


def reference_names_used(obj: dict) -> set[str]:
    """The reference names an object's attributes point at, per Kibana's conventions."""
    if obj["type"] == "lens":
        return {f"indexpattern-datasource-layer-{layer}" for layer in lens_layers(obj)}
    if obj["type"] == "dashboard":
        return {f"{p['panelIndex']}:{p['panelRefName']}" for p in panels(obj)}
    if obj["type"] == "search":
        return {search_source(obj)["indexRefName"]}
    return set()


def test_every_reference_resolves_inside_the_ndjson():
    objects = saved_objects()
    known = {(o["type"], o["id"]) for o in objects}
    assert len(known) == len(objects) == 11
    for obj in objects:
        names = [r["name"] for r in obj["references"]]
        assert len(names) == len(set(names)), obj["id"]
        assert set(names) == reference_names_used(obj), obj["id"]
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in known, f"{obj['id']} -> {ref}"
    dashboard = of_type("dashboard")[0]
    by_name = {r["name"]: r for r in dashboard["references"]}
    for panel in panels(dashboard):
        assert by_name[f"{panel['panelIndex']}:{panel['panelRefName']}"]["type"] == panel["type"]


def test_objects_fit_the_kibana_8_19_import_format():
    (dashboard,) = of_type("dashboard")
    assert set(dashboard["attributes"]) <= DASHBOARD_ATTRIBUTES
    for obj in saved_objects():
        assert obj["coreMigrationVersion"] == "8.8.0"
        version = tuple(int(n) for n in obj["typeMigrationVersion"].split("."))
        assert version <= LATEST_MIGRATION[obj["type"]], obj["id"]
    cells = set()
    for panel in panels(dashboard):
        grid = panel["gridData"]
        assert grid["i"] == panel["panelIndex"] and grid["x"] + grid["w"] <= 48
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        area = {(x, y) for x in columns for y in rows}
        assert not cells & area, f"panel {panel['panelIndex']} overlaps another"
        cells |= area
    (view,) = of_type("index-pattern")
    assert fnmatch("logs-modelmon.predictions-default", view["attributes"]["title"])
    template = json.loads((ELASTICSEARCH / "index-template.json").read_text())
    assert template["index_patterns"] == [view["attributes"]["title"]]
    assert template["priority"] > 500 and template["data_stream"] == {}


def kql(query: str) -> dict:
    """The Elasticsearch query of the KQL subset the saved searches use: ``f : *``,
    ``f : "v"`` joined by ``and``; anything else fails, to be added here first."""
    clauses = []
    for part in re.split(r"\s+and\s+", query.strip()):
        match = re.fullmatch(r'([\w.@]+)\s*:\s*(\*|"[^"]*")', part)
        assert match, f"KQL not understood by this test: {part!r}"
        field, value = match.groups()
        clauses.append({"exists": {"field": field}} if value == "*" else {"term": {field: value.strip('"')}})
        clauses[-1]["_field"] = field
    return {"fields": [c.pop("_field") for c in clauses], "query": {"bool": {"filter": clauses}}}


def aggregation(column: dict) -> dict | None:
    """The Elasticsearch aggregation behind one Lens column (None for the document count)."""
    field, operation = column.get("sourceField"), column["operationType"]
    if operation == "count":
        return None
    if operation == "date_histogram":
        return {"date_histogram": {"field": field, "fixed_interval": "1m"}}
    if operation == "terms" and column["params"].get("secondaryFields"):
        # Kibana asks for multi_terms (x-pack analytics, not in the test distribution): the
        # same buckets as nested terms.
        (secondary,) = column["params"]["secondaryFields"]
        size = column["params"]["size"]
        return {"terms": {"field": field, "size": size}, "aggs": {"by": {"terms": {"field": secondary}}}}
    if operation == "terms":
        return {"terms": {"field": field, "size": column["params"]["size"]}}
    if operation == "percentile":
        return {"percentiles": {"field": field, "percents": [column["params"]["percentile"]]}}
    if operation == "range":
        return {"histogram": {"field": field, "interval": 1000}}
    raise AssertionError(f"Lens operation {operation} not understood by this test")


@pytest.fixture(scope="module")
def stream(es, tmp_path_factory):
    """A data stream filled by the shipper with events of every kind (failures too)."""
    root = tmp_path_factory.mktemp("assets")
    write_events(root / "events", 400, run="assets")
    shipper = Shipper(es, ShipperConfig(root / "events", namespace=namespace(), state_dir=root / "state"))
    while shipper.run_once():
        pass
    es.indices.refresh(index=shipper.config.data_stream)
    return shipper.config.data_stream


def test_fields_named_by_saved_objects_exist_with_the_right_types(es, stream):
    caps = es.field_caps(index=stream, fields="*")["fields"]
    wanted: dict[str, set[str] | None] = {}  # field -> acceptable types (None: any)
    for view in of_type("index-pattern"):
        wanted[view["attributes"]["timeFieldName"]] = FIELD_KINDS["date"]
        for name in json.loads(view["attributes"]["fieldFormatMap"]):
            wanted[name] = FIELD_KINDS["number"]
    for search in of_type("search"):
        for name in search["attributes"]["columns"] + [s[0] for s in search["attributes"]["sort"]]:
            wanted.setdefault(name, None)
        for name in kql(search_source(search)["query"]["query"])["fields"]:
            wanted.setdefault(name, None)
    for lens in of_type("lens"):
        for layer in lens_layers(lens).values():
            for column in layer["columns"].values():
                if column["operationType"] == "count":
                    continue
                kinds = FIELD_KINDS[column["dataType"]]
                for name in [column["sourceField"], *column["params"].get("secondaryFields", [])]:
                    wanted[name] = kinds
    assert len(wanted) >= 10
    for name, kinds in sorted(wanted.items()):
        assert name in caps, f"{name} is not in the mapping of {stream}"
        if kinds is not None:
            assert set(caps[name]) <= kinds, f"{name}: {set(caps[name])}, a visualization needs {kinds}"


@pytest.mark.parametrize("search_id", [o["id"] for o in of_type("search")])
def test_each_saved_search_finds_events(es, stream, search_id):
    (search,) = [o for o in of_type("search") if o["id"] == search_id]
    query = kql(search_source(search)["query"]["query"])["query"]
    hits = es.search(index=stream, query=query, size=5)["hits"]
    assert hits["total"]["value"] > 0
    if search_id == "modelmon-search-errors":
        assert all(h["_source"]["event.outcome"] == "failure" for h in hits["hits"])


@pytest.mark.parametrize("lens_id", [o["id"] for o in of_type("lens")])
def test_each_visualization_has_data(es, stream, lens_id):
    (lens,) = [o for o in of_type("lens") if o["id"] == lens_id]
    for layer in lens_layers(lens).values():
        aggs = {cid: agg for cid, col in layer["columns"].items() if (agg := aggregation(col)) is not None}
        response = es.search(index=stream, size=0, aggs=aggs)["aggregations"]
        for column_id, result in response.items():
            if "buckets" in result:
                assert sum(b["doc_count"] for b in result["buckets"]) > 0, f"{lens_id}/{column_id}"
            else:
                assert all(v is not None for v in result["values"].values()), f"{lens_id}/{column_id}"
