"""deploy/kubernetes/, checked for real without a cluster.

``kustomize build`` renders it; kubeconform (-strict, no schema skipped) validates every
object: the Prometheus Operator's kinds against JSON schemas made from its own CRDs, the
Kubernetes kinds against kubernetes-validate's schemas (tests/kube_schemas.py), and it
catches planted mistakes. The PrometheusRules are the rule files (one source of truth:
generate.py --check, and group by group), and their groups pass ``promtool check rules``
of both Prometheus lines; the dashboard ConfigMaps hold grafana/dashboards/ as they are,
labelled for kube-prometheus-stack's sidecar. The PodMonitor finds the demo's pods and
ports; the demo's MODELMON_OUTCOMES is a URL the Redis store takes.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from kube_schemas import CRD_LOCATION, KUBERNETES_LOCATION, crd_schemas, kubernetes_schemas, load_all
from servers import LINES, binary

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
EXPECTED_KINDS = {"Namespace": 1, "Deployment": 2, "Service": 2, "PodMonitor": 1, "PrometheusRule": len(RULE_FILES),
                  "AlertmanagerConfig": 1, "ConfigMap": len(DASHBOARDS)}


def _generator():
    spec = importlib.util.spec_from_file_location("deploy_generate", DEPLOY / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    found = subprocess.run([str(ROOT / "scripts" / "install-k8s-tools.sh"), "--path"], capture_output=True,
                           text=True, check=True).stdout.strip().split(":")
    kustomize, kubeconform, crds = Path(found[0]) / "kustomize", Path(found[1]) / "kubeconform", Path(found[2])
    for path in (kustomize, kubeconform, crds):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/install-k8s-tools.sh", pytrace=False)
    return {"kustomize": kustomize, "kubeconform": kubeconform, "crds": crds}


@pytest.fixture(scope="module")
def built(tools) -> str:
    result = subprocess.run([str(tools["kustomize"]), "build", str(DEPLOY)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def objects(built) -> list[dict]:
    return load_all(built)


@pytest.fixture(scope="module")
def schemas(tools, tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("schemas")
    written = crd_schemas(tools["crds"], out / "crds")
    assert {"monitoring.coreos.com/podmonitor_v1", "monitoring.coreos.com/prometheusrule_v1",
            "monitoring.coreos.com/alertmanagerconfig_v1alpha1"} <= set(written)
    kubernetes_schemas(KUBERNETES_VERSION, out / "kubernetes")
    return ["-schema-location", f"{out / 'kubernetes'}/{KUBERNETES_LOCATION}",
            "-schema-location", f"{out / 'crds'}/{CRD_LOCATION}"]


def kubeconform(tools, schemas, text: str) -> tuple[dict, str]:
    result = subprocess.run([str(tools["kubeconform"]), "-strict", "-summary", "-output", "json",
                             "-kubernetes-version", KUBERNETES_VERSION, *schemas, "-"],
                            input=text, capture_output=True, text=True)
    report = json.loads(result.stdout)
    return report, result.stdout + result.stderr


# -- one source of truth ---------------------------------------------------------------


def test_the_generated_manifests_are_what_generate_py_writes():
    generator = _generator()
    for name, render in generator.OUTPUTS.items():
        assert (DEPLOY / name).read_text() == render(), \
            f"deploy/kubernetes/{name} differs from its sources: run python deploy/kubernetes/generate.py"


def test_each_prometheus_rule_holds_one_rule_file_as_it_is(objects):
    rules = {obj["metadata"]["annotations"]["modelmon/source"]: obj for obj in objects if obj["kind"] == "PrometheusRule"}
    sources = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
    assert sorted(rules) == [f"prometheus/rules/{p.name}" for p in sources]
    for path in sources:
        assert rules[f"prometheus/rules/{path.name}"]["spec"]["groups"] == yaml.safe_load(path.read_text())["groups"]


@pytest.mark.parametrize("line", LINES)
def test_the_prometheus_rules_groups_pass_promtool(objects, tmp_path, line):
    files = []
    for obj in objects:
        if obj["kind"] == "PrometheusRule":
            path = tmp_path / f"{obj['metadata']['name']}.yml"
            path.write_text(yaml.safe_dump({"groups": obj["spec"]["groups"]}, sort_keys=False))
            files.append(str(path))
    result = subprocess.run([binary("promtool", line), "check", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files) == len(RULE_FILES)


def test_the_dashboard_configmaps_hold_the_dashboards_for_the_sidecar(objects):
    maps = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    sources = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert len(maps) == len(sources)
    for path, configmap in zip(sources, sorted(maps, key=lambda m: m["metadata"]["name"])):
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["namespace"] == "modelmon"
        assert configmap["data"] == {path.name: path.read_text()}  # byte for byte
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())
        assert len(json.dumps(configmap)) < 256 * 1024  # fits kubectl apply's last-applied annotation


# -- kustomize + kubeconform ----------------------------------------------------------------


def test_kustomize_builds_every_object_into_the_namespace(objects):
    kinds: dict[str, int] = {}
    for obj in objects:
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "modelmon", obj["metadata"]["name"]
        if obj["kind"] in ("PodMonitor", "PrometheusRule"):
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # the stack's selectors
    assert kinds == EXPECTED_KINDS


def test_every_object_is_valid_against_the_kubernetes_and_operator_schemas(tools, schemas, built):
    report, output = kubeconform(tools, schemas, built)
    summary = report["summary"]
    assert summary == {"valid": sum(EXPECTED_KINDS.values()), "invalid": 0, "errors": 0, "skipped": 0}, output


@pytest.mark.parametrize("mistake", ["podmonitor-field", "rule-field", "replicas-type", "receiver-field",
                                     "configmap-field"])
def test_kubeconform_finds_planted_mistakes(tools, schemas, objects, mistake):
    bad = copy.deepcopy(objects)
    by_kind = {}
    for obj in bad:
        by_kind.setdefault(obj["kind"], obj)
    if mistake == "podmonitor-field":
        by_kind["PodMonitor"]["spec"]["podMetricsEndpoint"] = [{"port": "http"}]  # a typo: ...Endpoints
    elif mistake == "rule-field":
        by_kind["PrometheusRule"]["spec"]["groups"][0]["rules"][0]["exp"] = "up"
    elif mistake == "replicas-type":
        by_kind["Deployment"]["spec"]["replicas"] = "two"
    elif mistake == "receiver-field":
        # (not a nested route: the CRD leaves spec.route.routes unchecked, x-kubernetes-preserve-unknown-fields)
        hook = by_kind["AlertmanagerConfig"]["spec"]["receivers"][0]["webhookConfigs"][0]
        hook["uri"] = hook.pop("url")
    else:
        by_kind["ConfigMap"]["datas"] = {}
    report, output = kubeconform(tools, schemas, yaml.safe_dump_all(bad))
    assert report["summary"]["invalid"] == 1 and report["summary"]["skipped"] == 0, output


# -- the pieces fit together ---------------------------------------------------------------


def test_the_podmonitor_finds_the_demo_pods_and_their_ports(objects):
    monitor = next(obj for obj in objects if obj["kind"] == "PodMonitor")
    demo = next(obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "modelmon-demo")
    redis = next(obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "modelmon-redis")

    def selected(labels: dict) -> bool:
        selector = monitor["spec"]["selector"]
        if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
            return False
        return all(labels.get(e["key"]) not in e["values"] for e in selector.get("matchExpressions", [])
                   if e["operator"] == "NotIn")

    assert selected(demo["spec"]["template"]["metadata"]["labels"])
    assert not selected(redis["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"] for c in demo["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == ports == {"http", "shipper-metrics"}


def test_the_demo_takes_its_outcomes_from_the_redis_service(objects):
    from modelmon.serving.redis_store import RedisOutcomeStore

    demo = next(obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "modelmon-demo")
    model = next(c for c in demo["spec"]["template"]["spec"]["containers"] if c["name"] == "model")
    url = next(e["value"] for e in model["env"] if e["name"] == "MODELMON_OUTCOMES")
    service = next(obj for obj in objects if obj["kind"] == "Service" and obj["metadata"]["name"] == "modelmon-redis")
    assert url == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    RedisOutcomeStore(url)  # a URL the store takes (nothing is contacted at start-up)


# -- the AlertmanagerConfig routes as alertmanager/alertmanager.yml's ------------------------

_TIMING = {"groupBy": "group_by", "groupWait": "group_wait", "groupInterval": "group_interval",
           "repeatInterval": "repeat_interval", "receiver": "receiver", "continue": "continue"}


def _matchers(matchers: list[dict]) -> list[str]:
    return [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in matchers]


def _route(route: dict) -> dict:
    out = {_TIMING[key]: value for key, value in route.items() if key in _TIMING}
    if route.get("matchers"):
        out["matchers"] = _matchers(route["matchers"])
    if route.get("routes"):
        out["routes"] = [_route(child) for child in route["routes"]]
    return out


def as_alertmanager_config(spec: dict) -> dict:
    """The AlertmanagerConfig's spec in alertmanager.yml's terms (as the operator translates it,
    less the namespace matcher it adds)."""
    return {
        "route": _route(spec["route"]),
        "inhibit_rules": [{"source_matchers": _matchers(rule["sourceMatch"]),
                           "target_matchers": _matchers(rule["targetMatch"]), "equal": rule["equal"]}
                          for rule in spec.get("inhibitRules", [])],
        "receivers": [{"name": r["name"],
                       "webhook_configs": [{"url": h["url"], "send_resolved": h.get("sendResolved", True)}
                                           for h in r.get("webhookConfigs", [])]}
                      for r in spec["receivers"]],
    }


@pytest.mark.parametrize("line", LINES)
def test_the_alertmanagerconfig_routes_as_the_compose_stacks_alertmanager(objects, tmp_path, line):
    """The CRD's schema leaves nested routes unchecked: amtool checks them, and the tree equals
    alertmanager/alertmanager.yml's, timing and inhibitions included."""
    spec = next(obj for obj in objects if obj["kind"] == "AlertmanagerConfig")["spec"]
    converted = as_alertmanager_config(spec)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(converted, sort_keys=False))
    amtool = binary("amtool", line)
    check = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    shown = [subprocess.run([amtool, "config", "routes", "show", f"--config.file={p}"], capture_output=True,
                            text=True, check=True).stdout for p in (path, ROOT / "alertmanager" / "alertmanager.yml")]
    assert shown[0] == shown[1]
    source = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    assert converted["route"] == {key: value for key, value in source["route"].items()}
    assert converted["inhibit_rules"] == source["inhibit_rules"]
    assert {r["name"] for r in converted["receivers"]} == {r["name"] for r in source["receivers"]}
    for labels, receiver in ((["team=ops", "severity=critical"], "ops"), (["team=data-science"], "data-science"),
                             (["team=other"], "default")):
        result = subprocess.run([amtool, "config", "routes", "test", f"--config.file={path}",
                                 f"--verify.receivers={receiver}", *labels], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
