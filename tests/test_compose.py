"""docker-compose.yml, its Dockerfile and .env.example hold together.

Docker cannot run here, so the stack is checked the ways that do not need it, on the real
files:

- the compose file validates against the Compose Specification's JSON schema
  (tests/schemas/compose-spec.json, vendored: see tests/schemas/README.md);
- every service has a healthcheck, or is a one-shot that others wait for to complete;
  every dependency waits on a condition its target can meet; profiles leave the metrics
  stack whole without the "elastic" one;
- every image is pinned to an exact version (Grafana from grafana/VERSION, Elasticsearch
  and Kibana from elk/VERSION); no secret has a default; .env.example names exactly the
  variables compose requires;
- every file or directory mounted exists; every address a config file names
  (prometheus.yml, alertmanager.yml, Grafana's data sources) and every URL inside the
  compose file reaches a service on a port it declares; the commands parse with the real
  argument parsers of modelmon, demo.traffic and demo.alert_sink;
- the Dockerfile's COPY sources exist and pass .dockerignore, it installs the extras and
  trains the model at build time, and creates the volumes' mount points for its user.

Each check is a function returning the problems it finds, run on the real files (no
problem) and on deliberately broken copies (the problem is reported).
"""
from __future__ import annotations

import ast
import copy
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import yaml
from modelmon.cli import build_parser

from demo.native import current_bin_dirs

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA = json.loads((REPO / "tests" / "schemas" / "compose-spec.json").read_text())
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
ELASTIC_PROFILE = {"elasticsearch", "kibana", "setup", "shipper"}
# Services whose image does not come from ./Dockerfile, and the port each listens on by
# default (none of them is given a flag that moves it: checked below).
IMAGE_PORTS = {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000, "elasticsearch": 9200, "kibana": 5601}
LISTEN_FLAGS = ("--web.listen-address", "http.port", "SERVER_PORT", "GF_SERVER_HTTP_PORT")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_?KEY|ENCRYPTION_?KEY|CREDENTIAL", re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}; $VAR.
BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
BARE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
URL = re.compile(r"https?://([A-Za-z0-9.-]+):(\d+)")
ESCAPED = "\0"  # stands for compose's "$$" (a literal $) while variables are read


def load() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


COMPOSE = load()


# -- reading a compose document -----------------------------------------------------------------


def strings(node) -> Iterator[str]:
    """Every string value in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def references(text: str) -> list[tuple[str, str, str]]:
    """The variables compose interpolates in ``text``: (name, operator, argument);
    operator "" for ${VAR}, None for a bare $VAR."""
    text = text.replace("$$", ESCAPED)
    found = [(m.group(1), m.group(2) or "", m.group(3) or "") for m in BRACED.finditer(text)]
    found += [(m.group(1), None, "") for m in BARE.finditer(BRACED.sub("", text))]
    return found


def interpolate(text: str) -> str:
    """``text`` as compose would pass it with no .env: defaults applied, required
    variables as <NAME>, $$ as $."""

    def value(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if op.endswith("-"):
            return arg
        if op.endswith("?"):
            return f"<{name}>"
        return ""

    return BRACED.sub(value, text.replace("$$", ESCAPED)).replace(ESCAPED, "$")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return [interpolate(c) for c in (shlex.split(cmd) if isinstance(cmd, str) else cmd)]


def mounts(service: dict) -> list[dict]:
    """Volume entries in long form: type, source, target, read_only."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            result.append({"read_only": False, **entry})
            continue
        parts = entry.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
        kind = "bind" if source and source[0] in "./~" else "volume"
        result.append({"type": kind, "source": source, "target": target,
                       "read_only": len(parts) > 2 and "ro" in parts[2].split(",")})
    return result


def container_ports(service: dict) -> set[int]:
    """The ports a service declares it listens on: container side of ``ports``, ``expose``."""
    found = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            found.add(int(entry["target"]))
        else:
            found.add(int(str(entry).split("/")[0].split(":")[-1]))
    found |= {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    return found


def published_ports(service: dict) -> dict[int, str]:
    """Host port -> host address of the service's published ports ("" = every address)."""
    found = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            found[int(entry["published"])] = entry.get("host_ip", "")
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2:
            found[int(parts[-2])] = parts[-3] if len(parts) == 3 else ""
    return found


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_test(service: dict) -> list[str] | None:
    check = service.get("healthcheck")
    if not check or check.get("disable") in (True, "true"):
        return None
    test = check.get("test")
    test = [test] if isinstance(test, str) else list(test or [])
    return None if not test or test[0] == "NONE" else test


def one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def size(text: str | int) -> int:
    """Bytes of a compose size: 512m, 1g, 1073741824."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", str(text).strip().lower())
    assert match, f"not a size: {text!r}"
    return int(float(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " "))


def built_here(service: dict) -> bool:
    build = service.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    return context in (".", "./")


# -- the checks: each returns the problems it finds ---------------------------------------------


def schema_problems(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{error.json_path}: {error.message[:160]}" for error in validator.iter_errors(doc)]


def health_problems(doc: dict) -> list[str]:
    """Every service reports health, or runs once and is waited for to complete."""
    services = doc["services"]
    problems = []
    for name, service in services.items():
        if healthcheck_test(service):
            continue
        waited = [other for other, s in services.items() if depends_on(s).get(name) == "service_completed_successfully"]
        if not one_shot(service):
            problems.append(f"{name}: no healthcheck, and it is not a one-shot (restart \"no\")")
        elif not waited:
            problems.append(f"{name}: a one-shot without healthcheck that nothing waits for (service_completed_successfully)")
    return problems


def dependency_problems(doc: dict) -> list[str]:
    """Each depends_on names a service, with a condition it can meet; no cycle."""
    services = doc["services"]
    problems = []
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            if target not in services:
                problems.append(f"{name} depends on {target}, which is not a service")
            elif condition == "service_started" and isinstance(service.get("depends_on"), list):
                problems.append(f"{name}: depends_on {target} without a condition")
            elif condition == "service_healthy" and not healthcheck_test(services[target]):
                problems.append(f"{name} waits for {target} to be healthy; it has no healthcheck")
            elif condition == "service_completed_successfully" and not one_shot(services[target]):
                problems.append(f"{name} waits for {target} to complete; it restarts instead")

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            problems.append("dependency cycle: " + " -> ".join(path + (name,)))
            return
        for target in depends_on(services.get(name, {})):
            visit(target, path + (name,))

    for name in services:
        visit(name, ())
    return sorted(set(problems))


def profile_problems(doc: dict) -> list[str]:
    """The Elastic part is the "elastic" profile, and the default profile stands alone."""
    services = doc["services"]
    problems = []
    for name, service in services.items():
        profiles = set(service.get("profiles") or [])
        expected = {"elastic"} if name in ELASTIC_PROFILE else set()
        if profiles != expected:
            problems.append(f"{name}: profiles {sorted(profiles)}, expected {sorted(expected)}")
        if not profiles:
            for target in depends_on(service):
                if services.get(target, {}).get("profiles"):
                    problems.append(f"{name} (default profile) depends on {target}, which only runs in a profile")
    return problems


PINNED_TAG = re.compile(r"v?\d+\.\d+\.\d+([-.][A-Za-z0-9.]+)*")


def image_tag(image: str) -> str | None:
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else None


def image_problems(doc: dict) -> list[str]:
    """Every pulled image is pinned: a digest, or a full major.minor.patch tag."""
    problems = []
    for name, service in doc["services"].items():
        image = service.get("image")
        if image is None:
            if not service.get("build"):
                problems.append(f"{name}: neither image nor build")
            continue
        tag = image_tag(image)
        if "$" in image:
            problems.append(f"{name}: image {image} depends on a variable")
        elif tag is None or not (tag.startswith("sha256:") or PINNED_TAG.fullmatch(tag)):
            problems.append(f"{name}: image {image} is not pinned to an exact version")
    return problems


def secret_problems(doc: dict) -> list[str]:
    """No default for a secret: every secret variable is ${VAR:?message}, and every secret
    setting of a container is exactly such a reference."""
    problems = []
    for text in strings(doc):
        for var, op, arg in references(text):
            if SECRET_NAME.search(var) and (op != ":?" or not arg.strip()):
                form = f"${var}" if op is None else f"${{{var}{op}{arg}}}"
                problems.append(f"{form}: a secret must be ${{{var}:?message}}")
    for name, service in doc["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}", value):
                problems.append(f"{name}: {key} is not a required variable: {value!r}")
    return sorted(set(problems))


def required_variables(doc: dict) -> set[str]:
    return {var for text in strings(doc) for var, op, _ in references(text) if op in (":?", "?")}


def env_example_problems(doc: dict, example: str) -> list[str]:
    """.env.example names exactly the required variables, with no value filled in."""
    listed = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", example, re.MULTILINE))
    required = required_variables(doc)
    problems = [f"{var}: required by docker-compose.yml, missing from .env.example" for var in sorted(required - set(listed))]
    problems += [f"{var}: in .env.example, not required by docker-compose.yml" for var in sorted(set(listed) - required)]
    problems += [f"{var}: .env.example must not hold a value" for var, value in listed.items() if value.strip()]
    optional = {var for text in strings(doc) for var, op, _ in references(text) if op in (":-", "-")}
    problems += [f"{var}: optional variable not mentioned in .env.example" for var in sorted(optional)
                 if not re.search(rf"^#\s*{var}=", example, re.MULTILINE)]
    return problems


def mount_problems(doc: dict) -> list[str]:
    """Bind mounts are repository paths that exist, mounted read-only; named volumes are
    declared and used."""
    declared = set(doc.get("volumes") or {})
    used, problems = set(), []
    for name, service in doc["services"].items():
        for mount in mounts(service):
            if mount["type"] == "bind":
                source = mount["source"]
                if not source.startswith("./"):
                    problems.append(f"{name}: bind mount {source} is not a path inside the repository")
                elif not (REPO / source).exists():
                    problems.append(f"{name}: {source} does not exist")
                elif not mount["read_only"]:
                    problems.append(f"{name}: {source} is mounted writable")
            elif mount["type"] == "volume":
                used.add(mount["source"])
                if mount["source"] not in declared:
                    problems.append(f"{name}: volume {mount['source']} is not declared")
    problems += [f"volume {v} is declared and never mounted" for v in sorted(declared - used)]
    return problems


def host_path(service: dict, container_path: str) -> Path | None:
    """The repository path a bind mount puts at ``container_path``, if any."""
    path = PurePosixPath(container_path)
    for mount in mounts(service):
        if mount["type"] == "bind" and (path == PurePosixPath(mount["target"]) or
                                        PurePosixPath(mount["target"]) in path.parents):
            return REPO / mount["source"] / path.relative_to(mount["target"])
    return None


def config_addresses() -> list[tuple[str, str, int]]:
    """(where, host, port) of every address the mounted config files name."""
    found = []
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    for am in prometheus["alerting"]["alertmanagers"]:
        for static in am.get("static_configs", []):
            found += [("prometheus.yml alerting", *t.rsplit(":", 1)) for t in static["targets"]]
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            found += [(f"prometheus.yml job {job['job_name']}", *t.rsplit(":", 1)) for t in static["targets"]]
    alertmanager = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in alertmanager["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            found += [(f"alertmanager.yml receiver {receiver['name']}", *m) for m in URL.findall(hook["url"])]
    for path in sorted((REPO / "grafana" / "provisioning" / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            found += [(f"grafana datasource {source['name']}", *m) for m in URL.findall(source["url"])]
    return [(where, host, int(port)) for where, host, port in found]


def address_problems(doc: dict, addresses: list[tuple[str, str, int]]) -> list[str]:
    """Each address is a compose service and a port that service declares."""
    services = doc["services"]
    problems = []
    for where, host, port in addresses:
        port = int(port)
        if host not in services:
            problems.append(f"{where}: {host}:{port} is not a compose service")
        elif port not in container_ports(services[host]):
            problems.append(f"{where}: {host}:{port}, but {host} declares ports {sorted(container_ports(services[host]))}")
    return problems


def compose_urls(doc: dict) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """URLs inside the compose file, from environment, command and healthcheck: to other
    services (where, host, port), and to the host's published ports (service, where, port),
    which a service names for links meant for your browser."""
    internal, published = [], []
    for name, service in doc["services"].items():
        check = healthcheck_test(service) or []
        for text in list(environment(service).values()) + command(service) + check:
            for host, port in URL.findall(interpolate(text)):
                if host not in ("127.0.0.1", "localhost"):
                    internal.append((f"{name}: {text}", host, int(port)))
                elif text in check:  # inside the container: its own port
                    internal.append((f"{name} healthcheck", name, int(port)))
                else:
                    published.append((name, f"{name}: {text}", int(port)))
    return internal, published


def published_problems(doc: dict, urls: list[tuple[str, str, int]]) -> list[str]:
    """Each browser link points at a port its service publishes on the host."""
    services = doc["services"]
    return [f"{where}: {service} does not publish port {port}" for service, where, port in urls
            if service not in services or port not in published_ports(services[service])]


def memory_problems(doc: dict) -> list[str]:
    """Every service is capped, Elasticsearch's heap fits its cap, the whole fits a laptop."""
    problems = []
    for name, service in doc["services"].items():
        if "mem_limit" not in service:
            problems.append(f"{name}: no mem_limit")
    limits = {name: size(s["mem_limit"]) for name, s in doc["services"].items() if "mem_limit" in s}
    heap = re.search(r"-Xmx(\d+[kmg])", environment(doc["services"]["elasticsearch"]).get("ES_JAVA_OPTS", ""))
    if not heap or size(heap.group(1)) > limits.get("elasticsearch", 0) // 2:
        problems.append("elasticsearch: set -Xmx to at most half its mem_limit (the rest is off-heap)")
    default = sum(v for n, v in limits.items() if n not in ELASTIC_PROFILE)
    if default > 3 * 1024**3:
        problems.append(f"the default profile may take {default / 1024**3:.1f} GiB, over 3 GiB")
    if sum(limits.values()) > 6 * 1024**3:
        problems.append(f"the whole stack may take {sum(limits.values()) / 1024**3:.1f} GiB, over 6 GiB")
    return problems


# -- the Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").rstrip() + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(exclude?, pattern) of .dockerignore, in order, matched as Docker does."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = "".join(".*" if part == "**" else re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
                        for part in re.split(r"(\*\*)", glob))
        patterns.append((not negate, re.compile(regex.replace(".*/", "(.*/)?"))))
    return patterns


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets ``path`` (relative to the repository) into the build."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for exclude, pattern in dockerignore_patterns():
        if any(pattern.fullmatch(c) for c in candidates):
            excluded = exclude
    return not excluded


DOCKER = dockerfile_instructions(DOCKERFILE.read_text())


def dockerfile_copies() -> list[tuple[str, str]]:
    """(source, destination in the image) of every COPY from the build context."""
    workdir, copies = PurePosixPath("/"), []
    for instruction, args in DOCKER:
        if instruction == "WORKDIR":
            workdir = workdir / args
        elif instruction == "COPY" and "--from" not in args:
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            for source in words[:-1]:
                target = workdir / words[-1]
                copies.append((source, str(target / source if words[-1].endswith("/") else target)))
    return copies


def workdir() -> PurePosixPath:
    """The image's working directory, where relative paths of its commands start."""
    return PurePosixPath("/").joinpath(*[args for instruction, args in DOCKER if instruction == "WORKDIR"])


def image_path(container_path: str) -> Path | None:
    """The repository path a COPY put at ``container_path`` in our image, if any."""
    path = PurePosixPath(container_path)
    for source, target in dockerfile_copies():
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return REPO / source / path.relative_to(target)
    return None


# -- the checks on the real files -------------------------------------------------------------------


def test_the_compose_file_follows_the_compose_specification():
    assert schema_problems(COMPOSE) == []


def test_every_service_reports_health_or_is_a_one_shot_waited_for():
    assert health_problems(COMPOSE) == []
    assert [n for n, s in COMPOSE["services"].items() if not healthcheck_test(s)] == ["setup"]


def test_dependencies_wait_on_conditions_their_targets_meet():
    assert dependency_problems(COMPOSE) == []
    # The shipper needs the index template before its first event creates the data stream.
    assert depends_on(COMPOSE["services"]["shipper"])["setup"] == "service_completed_successfully"


def test_the_elastic_part_is_a_profile_the_metrics_stack_runs_without():
    assert profile_problems(COMPOSE) == []


def test_images_are_pinned_to_exact_versions():
    assert image_problems(COMPOSE) == []
    images = {name: s["image"] for name, s in COMPOSE["services"].items() if "image" in s}
    grafana, elk = (REPO / "grafana" / "VERSION").read_text().strip(), (REPO / "elk" / "VERSION").read_text().strip()
    assert images["grafana"] == f"grafana/grafana:{grafana}"
    assert images["elasticsearch"] == f"docker.elastic.co/elasticsearch/elasticsearch:{elk}"
    assert images["kibana"] == f"docker.elastic.co/kibana/kibana:{elk}"
    # The config files are written and tested for Prometheus 2.42 and 3.x and Alertmanager
    # 0.25 and 0.3x; compose runs the current releases, the ones the live tests run.
    prometheus = tuple(int(x) for x in image_tag(images["prometheus"]).lstrip("v").split("."))
    alertmanager = tuple(int(x) for x in image_tag(images["alertmanager"]).lstrip("v").split("."))
    assert prometheus[0] == 3 and (0, 30, 0) <= alertmanager < (1, 0, 0)
    built = {Path(d).name for d in current_bin_dirs()}
    assert {f"prometheus-{image_tag(images['prometheus']).lstrip('v')}",
            f"alertmanager-{image_tag(images['alertmanager']).lstrip('v')}"} == built, \
        "compose pins other versions than scripts/install-prometheus3.sh builds for the tests"
    # Our own services are built, never pulled.
    assert {n for n, s in COMPOSE["services"].items() if built_here(s)} == {
        "demo", "traffic", "alert-sink", "runbooks", "setup", "shipper"}


def test_no_secret_has_a_default():
    assert secret_problems(COMPOSE) == []
    assert required_variables(COMPOSE) >= {"ELASTIC_PASSWORD", "KIBANA_SYSTEM_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}


def test_env_example_names_every_variable_compose_requires():
    assert env_example_problems(COMPOSE, ENV_EXAMPLE.read_text()) == []


def test_mounted_files_and_volumes_exist():
    assert mount_problems(COMPOSE) == []
    # The config file each server is told to read is in the repository, through its mount.
    services = COMPOSE["services"]
    for name in ("prometheus", "alertmanager"):
        flag = next(c for c in command(services[name]) if c.startswith("--config.file="))
        assert host_path(services[name], flag.split("=", 1)[1]).is_file(), flag
    # The files those configs include, relative to themselves, come through the same mount.
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    included = prometheus["rule_files"] + [f for job in prometheus["scrape_configs"]
                                           for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    alertmanager = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    for name, patterns in (("prometheus", included), ("alertmanager", alertmanager["templates"])):
        config_dir = PurePosixPath(next(c for c in command(services[name]) if c.startswith("--config.file=")
                                        ).split("=", 1)[1]).parent
        for pattern in patterns:
            directory = host_path(services[name], str(config_dir / PurePosixPath(pattern).parent))
            assert directory is not None and directory.is_dir(), f"{name}: {pattern} is not mounted"
            assert pattern.startswith("targets/") or list(directory.glob(PurePosixPath(pattern).name)), pattern
    grafana = services["grafana"]
    assert host_path(grafana, environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    assert host_path(grafana, "/etc/grafana/provisioning/datasources/modelmon.yml").is_file()
    provider = yaml.safe_load((REPO / "grafana" / "provisioning" / "dashboards" / "modelmon.yml").read_text())
    assert host_path(grafana, provider["providers"][0]["options"]["path"]) == REPO / "grafana" / "dashboards"


def test_every_address_in_the_config_files_is_a_service_port():
    addresses = config_addresses()
    assert {(host, port) for _, host, port in addresses} >= {
        ("demo", 8000), ("alertmanager", 9093), ("alert-sink", 9099), ("prometheus", 9090), ("elasticsearch", 9200)}
    assert address_problems(COMPOSE, addresses) == []


def test_the_native_stack_stands_in_for_the_same_services(tmp_path, repo_on_path):
    """demo/stack.py (make demo) replaces compose addresses in the same config files: each
    one it replaces is a compose service port, and it replaces every one the configs name."""
    from demo.stack import NativeStack

    native = [tuple(address.rsplit(":", 1)) for address in NativeStack(tmp_path).addresses]
    assert address_problems(COMPOSE, [("demo/stack.py", host, port) for host, port in native]) == []
    assert {(host, port) for _, host, port in config_addresses()} <= {(host, int(port)) for host, port in native}


def test_every_url_inside_the_compose_file_reaches_a_declared_port():
    internal, published = compose_urls(COMPOSE)
    assert address_problems(COMPOSE, internal) == []
    # External URLs (links in alerts, Kibana's base URL) point at ports the stack publishes,
    # and so does the Grafana address Prometheus puts in alert annotations.
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    grafana_url = prometheus["global"]["external_labels"]["grafana_url"]
    published += [("grafana", "prometheus.yml grafana_url", int(p)) for _, p in URL.findall(grafana_url)]
    # ... and the runbooks' (the runbooks service serves docs/runbooks there).
    runbook_base_url = prometheus["global"]["external_labels"]["runbook_base_url"]
    published += [("runbooks", "prometheus.yml runbook_base_url", int(p)) for _, p in URL.findall(runbook_base_url)]
    assert published_problems(COMPOSE, published) == []
    assert {port for _, _, port in published} >= {3000, 5601, 9090, 9093, 9098}


def test_published_ports_listen_on_loopback_only():
    for name, service in COMPOSE["services"].items():
        for port, address in published_ports(service).items():
            assert address == "127.0.0.1", f"{name} publishes {port} on {address or 'every address'}"


@pytest.fixture
def repo_on_path(monkeypatch):
    """The demo package imports from the repository root, as in the image's /app."""
    monkeypatch.syspath_prepend(str(REPO))


def test_servers_listen_on_the_ports_compose_declares(monkeypatch, repo_on_path):
    services = COMPOSE["services"]
    for name, port in IMAGE_PORTS.items():
        assert port in container_ports(services[name]), name
        settings = command(services[name]) + list(environment(services[name]))
        assert not [s for s in settings if s.startswith(LISTEN_FLAGS)], f"{name} moves its port"
    # The demo service: gunicorn with demo/gunicorn.conf.py, found in the image's work dir.
    demo = command(services["demo"])
    conf = image_path(str(workdir() / demo[demo.index("-c") + 1]))
    assert conf is not None and conf.is_file()
    bind = runpy.run_path(str(conf))["bind"]
    assert int(bind.rsplit(":", 1)[1]) in container_ports(services["demo"])
    module, app = demo[-1].split(":")
    tree = ast.parse(image_path(str(workdir() / (module.replace(".", "/") + ".py"))).read_text())
    assert app in {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    # The alert sink: its real argument parser, the server stubbed.
    from demo import alert_sink as sink

    bound = []
    monkeypatch.setattr(sink, "ThreadingHTTPServer", lambda address, handler: bound.append(address) or _Idle())
    run_module_main(monkeypatch, sink.main, command(services["alert-sink"]), "demo.alert_sink")
    assert bound and bound[0][1] in container_ports(services["alert-sink"])
    # The runbooks: the same, and the folder it serves is docs/runbooks, mounted.
    from demo import runbooks

    served = []
    monkeypatch.setattr(runbooks, "server", lambda *args: served.append(args) or _Idle())
    run_module_main(monkeypatch, runbooks.main, command(services["runbooks"]), "demo.runbooks")
    (directory, _, port), = served
    assert port in container_ports(services["runbooks"])
    assert host_path(services["runbooks"], str(directory)) == REPO / "docs" / "runbooks"


class _Idle:
    def serve_forever(self) -> None:
        pass


def run_module_main(monkeypatch, main: Callable[[], None], argv: list[str], module: str) -> None:
    """Run ``main`` of ``python -m module ...`` with the argv compose gives it."""
    assert argv[:3] == ["python", "-m", module], argv
    monkeypatch.setattr(sys, "argv", [module, *argv[3:]])
    main()


def test_the_traffic_command_parses_with_the_real_parser(monkeypatch, repo_on_path):
    from demo import traffic

    started = []

    class Traffic:
        sent = failed = 0

        def __init__(self, url: str, scenario: str, rate: float, token: str | None = None):
            started.append((url, scenario, rate))

        def run(self, duration: float) -> None:
            pass

    monkeypatch.setattr(traffic, "Traffic", Traffic)
    run_module_main(monkeypatch, traffic.main, command(COMPOSE["services"]["traffic"]), "demo.traffic")
    [(url, scenario, rate)] = started
    assert scenario in traffic.SCENARIOS and rate > 0
    assert address_problems(COMPOSE, [("traffic --url", *URL.findall(url)[0])]) == []


def setup_script() -> tuple[str, str, list[str]]:
    """The setup service's shell script, its Python part and its `modelmon setup` argv."""
    shell = command(COMPOSE["services"]["setup"])
    assert shell[:2] == ["sh", "-ec"], shell
    script = shell[2]
    python = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.DOTALL)
    assert python, "the setup script has no python - <<'PY' ... PY part"
    [exec_line] = [line for line in script.splitlines() if line.startswith("exec modelmon ")]
    return script, python.group(1), shlex.split(exec_line)[2:]


def test_the_shipper_and_setup_commands_parse_with_the_real_parser():
    services = COMPOSE["services"]
    ship = command(services["shipper"])
    assert ship[0] == "modelmon"
    args = build_parser().parse_args(ship[1:])
    assert args.run.__module__ == "modelmon.pipeline.shipper"
    assert args.metrics_port in container_ports(services["shipper"])
    # It reads the volume the demo writes its events to, read-only, and keeps its state in
    # a volume of its own, writable.
    targets = {m["source"]: m for m in mounts(services["shipper"])}
    assert targets["events"]["target"] == args.events_dir and targets["events"]["read_only"]
    demo = {m["source"]: m for m in mounts(services["demo"])}
    assert demo["events"]["target"] == environment(services["demo"])["MODELMON_EVENTS_DIR"]
    assert not demo["events"]["read_only"]
    state = [m for m in mounts(services["shipper"]) if m["target"] == args.state_dir]
    assert state and state[0]["type"] == "volume" and not state[0]["read_only"]

    _, _, setup_argv = setup_script()
    args = build_parser().parse_args(setup_argv)
    assert args.run.__module__ == "modelmon.pipeline.elk_setup"
    assert "--assets" not in setup_argv  # the assets installed with the package
    dockerfile = DOCKERFILE.read_text()
    # exporters/modelmon/pipeline/elk links to elk/: it must be in the image when the package is built.
    assert dockerfile.index("COPY elk ") < dockerfile.index("RUN pip install")
    assert re.fullmatch(r"\d+[dhms]", args.retention)


def test_the_setup_script_is_valid_shell_and_python():
    script, python, _ = setup_script()
    compile(python, "setup (docker-compose.yml)", "exec")
    shell = shutil.which("sh")
    done = subprocess.run([shell, "-n", "-c", script], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr


def test_users_the_setup_creates_are_the_ones_the_services_log_in_with():
    services = COMPOSE["services"]
    setup = environment(services["setup"])
    _, python, _ = setup_script()

    def var(value: str) -> str:
        [(name, _, _)] = references(value)
        return name

    es = environment(services["elasticsearch"])
    assert setup["ELASTICSEARCH_USERNAME"] == "elastic"
    assert var(setup["ELASTICSEARCH_PASSWORD"]) == var(es["ELASTIC_PASSWORD"])
    kibana = environment(services["kibana"])
    assert kibana["ELASTICSEARCH_USERNAME"] == "kibana_system" and 'username="kibana_system"' in python
    assert var(kibana["ELASTICSEARCH_PASSWORD"]) == var(setup["KIBANA_SYSTEM_PASSWORD"])
    for client, prefix in (("shipper", "SHIPPER"), ("grafana", "GRAFANA")):
        env = environment(services[client])
        assert env["ELASTICSEARCH_USERNAME"] == setup[f"{prefix}_USERNAME"], client
        assert var(env["ELASTICSEARCH_PASSWORD"]) == var(setup[f"{prefix}_PASSWORD"]), client
        assert f'env["{prefix}_USERNAME"]' in python and f'env["{prefix}_PASSWORD"]' in python


def test_elasticsearch_runs_with_security_and_the_basic_license():
    es = environment(COMPOSE["services"]["elasticsearch"])
    assert es["xpack.security.enabled"] == "true"
    assert es["xpack.license.self_generated.type"] == "basic"
    assert es["discovery.type"] == "single-node"
    # Plain HTTP inside the compose network (TLS auto-configuration is skipped): every
    # client says so, Grafana's data source included.
    clients = [t for t in strings(COMPOSE) if "elasticsearch:9200" in t]
    clients += [s["url"] for s in yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "modelmon.yml").read_text())["datasources"]
        if "elasticsearch" in s["url"]]
    assert len(clients) >= 4 and all("http://elasticsearch:9200" in t for t in clients), clients


def test_memory_limits_fit_a_laptop():
    assert memory_problems(COMPOSE) == []


def test_the_dockerfile_copies_what_exists_into_the_build_context():
    copies = dockerfile_copies()
    assert copies
    for source, _ in copies:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert in_build_context(source), f"COPY {source}: left out by .dockerignore"
    # The data the model is trained on goes in; secrets, local builds and caches do not.
    assert in_build_context("demo/data/train.csv")
    for path in (".env", ".git/HEAD", ".venv/bin/python", ".cache/elasticsearch/x.zip", "demo/build/model.joblib",
                 "benchmarks/bench_observe.py", "exporters/modelmon/__pycache__/x.pyc", "tests/test_compose.py"):
        assert not in_build_context(path), path


def test_the_dockerfile_pins_its_base_installs_the_extras_and_trains_at_build_time():
    [base] = [args for instruction, args in DOCKER if instruction == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    runs = [args for instruction, args in DOCKER if instruction == "RUN"]
    [install] = [r for r in runs if "pip install" in r]
    extras = re.search(r"\.\[([a-z,]+)\]", install)
    assert extras and {"demo", "elastic"} <= set(extras.group(1).split(","))
    order = [(i, args) for i, args in DOCKER]
    train = order.index(("RUN", "python -m demo.train"))
    assert train > order.index(("RUN", install))
    assert train > next(i for i, (ins, args) in enumerate(order) if ins == "COPY" and args.startswith("demo "))
    [user] = [args for instruction, args in DOCKER if instruction == "USER"]
    assert user not in ("root", "0")


def test_the_image_creates_the_mount_points_of_its_volumes():
    """Docker gives a new named volume the owner of its mount point in the image: the
    unprivileged user must own each one our services write to."""
    created = " ".join(args for instruction, args in DOCKER if instruction == "RUN" and "install -d" in args)
    for name, service in COMPOSE["services"].items():
        if built_here(service):
            for mount in mounts(service):
                if mount["type"] == "volume":
                    assert mount["target"] in created.split(), f"{name}: {mount['target']} not created in the image"


def test_docs_describe_every_service_volume_and_password():
    """docs/compose.md has a row for each service (with its image), volume and required variable."""
    rows = {line.split("|")[1].strip().strip("`"): line for line in (REPO / "docs" / "compose.md").read_text().splitlines()
            if line.startswith("| ")}
    for name, service in COMPOSE["services"].items():
        assert name in rows, f"docs/compose.md: no row for service {name}"
        assert service.get("image", "built") in rows[name], f"docs/compose.md: {name} is not {service.get('image')}"
    for name in list(COMPOSE["volumes"]) + sorted(required_variables(COMPOSE)):
        assert name in rows, f"docs/compose.md: no row for {name}"


# -- deliberately broken documents: each check must object ------------------------------------------


def broken(change: Callable[[dict], None]) -> dict:
    doc = copy.deepcopy(COMPOSE)
    change(doc)
    return doc


def svc(doc: dict, name: str) -> dict:
    return doc["services"][name]


BROKEN: dict[str, tuple[Callable[[dict], None], Callable[[dict], list[str]], str]] = {
    # name: (the breakage, the check, a part of the problem it must report)
    "misspelt healthcheck key": (lambda d: svc(d, "demo")["healthcheck"].update(intervall="5s"),
                                 schema_problems, "intervall"),
    "misspelt service key": (lambda d: svc(d, "demo").update(healtcheck=svc(d, "demo").pop("healthcheck")),
                             schema_problems, "'healtcheck' was unexpected"),
    "unknown depends_on condition": (
        lambda d: svc(d, "traffic")["depends_on"]["demo"].update(condition="service_healty"),
        schema_problems, "service_healty"),
    "unknown top-level key": (lambda d: d.update(service={}), schema_problems, "'service' does not match"),
    "ports as a mapping": (lambda d: svc(d, "grafana").update(ports={"3000": 3000}), schema_problems,
                           "$.services.grafana.ports"),
    "no healthcheck": (lambda d: svc(d, "prometheus").pop("healthcheck"), health_problems, "prometheus"),
    "one-shot that restarts": (lambda d: svc(d, "setup").update(restart="on-failure"), health_problems, "setup"),
    "healthy without healthcheck": (lambda d: svc(d, "alert-sink").pop("healthcheck"),
                                    dependency_problems, "alertmanager waits for alert-sink"),
    "dependency on a missing service": (
        lambda d: svc(d, "grafana")["depends_on"].update(loki={"condition": "service_started"}),
        dependency_problems, "loki"),
    "dependency cycle": (
        lambda d: svc(d, "alert-sink").update(depends_on={"prometheus": {"condition": "service_healthy"}}),
        dependency_problems, "cycle"),
    "default service needing the elastic profile": (
        lambda d: svc(d, "grafana")["depends_on"].update(elasticsearch={"condition": "service_healthy"}),
        profile_problems, "grafana (default profile) depends on elasticsearch"),
    "kibana without the profile": (lambda d: svc(d, "kibana").pop("profiles"), profile_problems, "kibana"),
    "latest tag": (lambda d: svc(d, "grafana").update(image="grafana/grafana:latest"), image_problems, "grafana"),
    "floating major": (lambda d: svc(d, "prometheus").update(image="prom/prometheus:v2"), image_problems, "v2"),
    "no tag": (lambda d: svc(d, "alertmanager").update(image="prom/alertmanager"), image_problems, "alertmanager"),
    "version from a variable": (
        lambda d: svc(d, "kibana").update(image="docker.elastic.co/kibana/kibana:${ELK_VERSION}"),
        image_problems, "variable"),
    "secret with a default": (
        lambda d: svc(d, "elasticsearch")["environment"].update(ELASTIC_PASSWORD="${ELASTIC_PASSWORD:-changeme}"),
        secret_problems, "ELASTIC_PASSWORD"),
    "secret written in": (lambda d: svc(d, "grafana")["environment"].update(GF_SECURITY_ADMIN_PASSWORD="admin"),
                          secret_problems, "GF_SECURITY_ADMIN_PASSWORD"),
    "secret without a message": (
        lambda d: svc(d, "kibana")["environment"].update(ELASTICSEARCH_PASSWORD="${KIBANA_SYSTEM_PASSWORD:?}"),
        secret_problems, "KIBANA_SYSTEM_PASSWORD"),
    "secret as a bare variable": (
        lambda d: svc(d, "setup")["environment"].update(SHIPPER_PASSWORD="$SHIPPER_ELASTICSEARCH_PASSWORD"),
        secret_problems, "SHIPPER_ELASTICSEARCH_PASSWORD"),
    "missing config directory": (lambda d: svc(d, "prometheus")["volumes"].__setitem__(0, "./prometheus2:/etc/prometheus:ro"),
                                 mount_problems, "./prometheus2"),
    "undeclared volume": (lambda d: d["volumes"].pop("grafana-data"), mount_problems, "grafana-data"),
    "writable config mount": (lambda d: svc(d, "grafana")["volumes"].__setitem__(0, "./grafana/provisioning:/etc/grafana/provisioning"),
                              mount_problems, "writable"),
    "service port moved": (lambda d: svc(d, "prometheus").update(ports=["127.0.0.1:9091:9091"]),
                           lambda d: address_problems(d, config_addresses()), "prometheus:9090"),
    "service renamed": (lambda d: d["services"].__setitem__("sink", d["services"].pop("alert-sink")),
                        lambda d: address_problems(d, config_addresses()), "alert-sink:9099 is not a compose service"),
    "internal URL to a wrong port": (
        lambda d: svc(d, "shipper")["environment"].update(ELASTICSEARCH_URL="http://elasticsearch:9300"),
        lambda d: address_problems(d, compose_urls(d)[0]), "elasticsearch:9300"),
    "healthcheck on another port": (
        lambda d: svc(d, "grafana")["healthcheck"].update(test=["CMD", "wget", "-q", "http://127.0.0.1:3001/api/health"]),
        lambda d: address_problems(d, compose_urls(d)[0]), "3001"),
    "external URL not published": (lambda d: svc(d, "kibana").update(ports=[]),
                                   lambda d: published_problems(d, compose_urls(d)[1]), "5601"),
    "no memory limit": (lambda d: svc(d, "kibana").pop("mem_limit"), memory_problems, "kibana"),
    "heap as large as the limit": (
        lambda d: svc(d, "elasticsearch")["environment"].update(ES_JAVA_OPTS="-Xms1g -Xmx1g"),
        memory_problems, "-Xmx"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_checks_reject_a_broken_compose_file(case):
    change, check, expected = BROKEN[case]
    assert check(COMPOSE) == [], "the real file must pass this check"
    problems = check(broken(change))
    assert any(expected in p for p in problems), problems


def test_env_example_check_rejects_a_missing_extra_or_filled_variable():
    example = ENV_EXAMPLE.read_text()
    assert any("KIBANA_ENCRYPTION_KEY" in p for p in
               env_example_problems(COMPOSE, example.replace("KIBANA_ENCRYPTION_KEY=", "")))
    assert any("SLACK_TOKEN" in p for p in env_example_problems(COMPOSE, example + "SLACK_TOKEN=\n"))
    assert any("must not hold a value" in p for p in
               env_example_problems(COMPOSE, example.replace("ELASTIC_PASSWORD=\n", "ELASTIC_PASSWORD=changeme\n")))


def test_variables_are_read_as_compose_reads_them():
    assert references("${A:?set A} ${B:-x} $C $${D} $$E") == [("A", ":?", "set A"), ("B", ":-", "x"), ("C", None, "")]
    assert interpolate("--rate ${RATE:-10} -u elastic:$${PW} ${X:?msg}") == "--rate 10 -u elastic:${PW} <X>"
    assert in_build_context("exporters/modelmon/cli.py") and not in_build_context("exporters/modelmon.egg-info/PKG-INFO")
