"""JSON schemas for kubeconform, made here from what the registries ship (no cluster, no GitHub).

- The Prometheus Operator's CRDs (YAML in its Go module, example/prometheus-operator-crd/,
  cached by scripts/install-k8s-tools.sh): each version's openAPIV3Schema becomes
  ``<group>/<kind>_<version>.json``, made strict as kubeconform's openapi2jsonschema.py does
  (objects with properties accept no others, unless they preserve unknown fields), with
  x-kubernetes-int-or-string as "string or integer".
- The Kubernetes schemas of the kubernetes-validate package (PyPI), laid out as kubeconform
  expects (``v1.37.0-standalone-strict/deployment-apps-v1.json``); their references to
  ``/api/_definitions.json`` are pointed at the package's copy of that file.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

CRD_LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
KUBERNETES_LOCATION = "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a bare ``=`` (an enum value in the CRDs) as the "value" tag: here a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _strict(node):
    if isinstance(node, dict):
        node = {key: _strict(value) for key, value in node.items()}
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "oneOf" not in node:
            node.pop("type", None)
            node["anyOf"] = [{"type": "string"}, {"type": "integer"}]
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(value) for value in node]
    return node


def crd_schemas(crd_dir: Path, out: Path) -> list[str]:
    """Write the CRDs' schemas under ``out``; the kinds written (group/kind_version)."""
    written = []
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_Loader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                target = out / spec["group"] / f"{spec['names']['kind'].lower()}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema))
                written.append(f"{spec['group']}/{target.stem}")
    return written


def kubernetes_schemas(version: str, out: Path) -> Path:
    """Copy kubernetes-validate's strict schemas of ``version`` (e.g. "1.37.0") for kubeconform."""
    import kubernetes_validate

    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    if not source.is_dir():
        raise FileNotFoundError(f"kubernetes-validate has no schemas for Kubernetes {version} ({source})")
    target = out / f"v{version}-standalone-strict"
    target.mkdir(parents=True, exist_ok=True)
    definitions = (source / "_definitions.json").resolve()
    for path in source.glob("*.json"):
        text = path.read_text()
        if path.name != "_definitions.json":
            text = text.replace('"/api/_definitions.json#', f'"file://{definitions}#')
        else:
            text = text.replace('"/api/_definitions.json#', '"#')
        (target / path.name).write_text(text)
    return target


def load_all(text: str) -> list:
    """The YAML documents of ``text``, a bare ``=`` read as a string (kustomize writes matchType: =)."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]
