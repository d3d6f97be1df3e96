"""``modelmon setup``: install the Elasticsearch side of the event pipeline and the Kibana
saved objects. Idempotent: every call puts the same definitions again, so it is safe to
run on every start.

The assets are the files under ``elk/`` of the repository, which the package carries
(``modelmon/elk``; ``--assets`` for edited copies): each JSON file
in ``elk/elasticsearch/`` is the request body of its API call, and ``elk/kibana/*.ndjson``
is imported through Kibana's saved-objects import API. The ``elasticsearch`` package
(``pip install 'modelmon[elastic]'``) is imported only when a command runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

DEFAULT_ASSETS = Path(__file__).resolve().parent / "elk"  # elk/ of the repository
ILM_POLICY = "modelmon-predictions"
ILM_COMPONENT = "modelmon-predictions@ilm"
INDEX_TEMPLATE = "logs-modelmon.predictions"
COMPONENTS = {  # component template -> its file in elk/elasticsearch/
    "modelmon-predictions@settings": "component-settings.json",
    "modelmon-predictions@mappings": "component-mappings.json",
}
RETENTION = re.compile(r"^\d+(d|h|m|s)$")


class SetupError(RuntimeError):
    """Setup cannot go on; the message says why and what to check."""


def elasticsearch_module():
    """The ``elasticsearch`` package, or a clear error naming the extra to install."""
    try:
        import elasticsearch
    except ImportError:
        raise SetupError("the elasticsearch package is missing: pip install 'modelmon[elastic]'") from None
    return elasticsearch


def client_too_new(exc: BaseException) -> str | None:
    """What to do when the Python client is of a newer major than the server, else None.

    elasticsearch-py 9 asks for the 9.x REST API (``compatible-with=9``), which an 8.x server
    refuses with 400 ``media_type_header_exception``; client 8 talks to 8.x and 9.x servers."""
    text = str(exc)
    if "media_type_header_exception" not in text and "Accept version must be" not in text:
        return None
    version = getattr(elasticsearch_module(), "__versionstr__", "?")
    return (f"the Python client elasticsearch {version} speaks only the REST API of Elasticsearch "
            f"{version.split('.')[0]}.x, which this older server refuses: for an 8.x server install "
            "the client 8 (pip install 'elasticsearch>=8.13,<9'), which also works with 9.x")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Elasticsearch connection flags; each defaults to an environment variable, none to a value."""
    env = os.environ.get
    group = parser.add_argument_group("Elasticsearch connection")
    group.add_argument("--es-url", default=env("ELASTICSEARCH_URL"), help="default: $ELASTICSEARCH_URL")
    group.add_argument("--es-username", default=env("ELASTICSEARCH_USERNAME"), help="default: $ELASTICSEARCH_USERNAME")
    group.add_argument(
        "--es-password", default=env("ELASTICSEARCH_PASSWORD"), help="default (and better): $ELASTICSEARCH_PASSWORD"
    )
    group.add_argument(
        "--es-api-key", default=env("ELASTICSEARCH_API_KEY"), help="encoded API key; default: $ELASTICSEARCH_API_KEY"
    )
    group.add_argument(
        "--es-ca-certs", default=env("ELASTICSEARCH_CA_CERTS"), help="CA bundle; default: $ELASTICSEARCH_CA_CERTS"
    )


def credentials(args: argparse.Namespace) -> dict[str, Any]:
    """Authentication keyword arguments shared by the Elasticsearch client and Kibana requests."""
    if args.es_api_key:
        return {"api_key": args.es_api_key}
    if args.es_username or args.es_password:
        if not (args.es_username and args.es_password):
            raise SetupError("give both --es-username and --es-password (or $ELASTICSEARCH_USERNAME/_PASSWORD)")
        return {"basic_auth": (args.es_username, args.es_password)}
    return {}


def connect(args: argparse.Namespace, request_timeout: float = 30.0) -> "Elasticsearch":
    """An Elasticsearch client from the connection flags; retries are left to the caller."""
    if not args.es_url:
        raise SetupError("no Elasticsearch URL: pass --es-url or set $ELASTICSEARCH_URL")
    es = elasticsearch_module()
    return es.Elasticsearch(
        args.es_url,
        ca_certs=args.es_ca_certs,
        request_timeout=request_timeout,
        max_retries=0,
        **credentials(args),
    )


def wait_for(what: str, probe: Callable[[], object], timeout: float, interval: float = 1.0) -> None:
    """Call ``probe`` until it returns without raising; fail naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except SetupError:
            raise
        except Exception as exc:  # any failure means "not ready yet"
            if time.monotonic() >= deadline:
                raise SetupError(f"{what} did not answer within {timeout:g}s: {exc}") from exc
        time.sleep(interval)


def wait_for_elasticsearch(client: "Elasticsearch", timeout: float) -> None:
    es = elasticsearch_module()

    def probe() -> None:
        try:
            client.cluster.health(wait_for_status="yellow", timeout="5s")
        except (es.AuthenticationException, es.AuthorizationException) as exc:
            raise SetupError(f"Elasticsearch refused the credentials: {exc}") from exc
        except es.BadRequestError as exc:
            if advice := client_too_new(exc):
                raise SetupError(f"Elasticsearch refused the client: {advice}") from exc
            raise

    wait_for("Elasticsearch", probe, timeout)


def has_ilm(client: "Elasticsearch") -> bool:
    """Whether the cluster serves the ILM API (the test distribution and some hosted ones do not)."""
    es = elasticsearch_module()
    try:
        client.ilm.get_status()
        return True
    except es.ApiError as exc:
        if exc.meta.status in (400, 404, 405, 410):
            return False
        raise


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def ilm_policy(assets: Path, retention: str) -> dict:
    """The ILM request body with the delete phase at ``retention``."""
    body = read_json(assets / "elasticsearch" / "ilm-policy.json")
    body["policy"]["phases"]["delete"]["min_age"] = retention
    return body


def install_elasticsearch(client: "Elasticsearch", assets: Path, retention: str = "30d") -> list[str]:
    """Put the ILM policy (where the cluster has ILM), component and index templates."""
    done = []
    directory = assets / "elasticsearch"
    if has_ilm(client):
        client.ilm.put_lifecycle(name=ILM_POLICY, body=ilm_policy(assets, retention))
        client.cluster.put_component_template(name=ILM_COMPONENT, body=read_json(directory / "component-ilm.json"))
        done.append(f"ILM policy {ILM_POLICY} (delete after {retention}) and component template {ILM_COMPONENT}")
    else:
        done.append(
            f"skipped ILM: this cluster has no index lifecycle management, so {ILM_POLICY} is not installed "
            "and events are kept until deleted by hand"
        )
    for name, filename in COMPONENTS.items():
        client.cluster.put_component_template(name=name, body=read_json(directory / filename))
        done.append(f"component template {name}")
    client.indices.put_index_template(name=INDEX_TEMPLATE, body=read_json(directory / "index-template.json"))
    done.append(f"index template {INDEX_TEMPLATE}")
    return done


def saved_objects(assets: Path) -> bytes:
    """Every ``elk/kibana/*.ndjson`` file, concatenated into one import."""
    files = sorted((assets / "kibana").glob("*.ndjson"))
    if not files:
        raise SetupError(f"no saved objects in {assets / 'kibana'}")
    return b"".join(f.read_bytes().rstrip(b"\n") + b"\n" for f in files)


def install_kibana(url: str, auth: dict[str, Any], assets: Path, timeout: float, ca_certs: str | None = None) -> str:
    """Wait until Kibana is available, then import the saved objects, overwriting earlier copies."""
    import requests

    session = requests.Session()
    session.headers["kbn-xsrf"] = "modelmon"
    if "api_key" in auth:
        session.headers["Authorization"] = f"ApiKey {auth['api_key']}"
    elif "basic_auth" in auth:
        session.auth = auth["basic_auth"]
    if ca_certs:
        session.verify = ca_certs
    base = url.rstrip("/")

    def probe() -> None:
        response = session.get(f"{base}/api/status", timeout=5)
        if response.status_code in (401, 403):
            raise SetupError(f"Kibana refused the credentials ({response.status_code})")
        response.raise_for_status()
        # The import needs saved objects, not every plugin: a degraded plugin must not stall setup.
        status = response.json().get("status", {})
        level = status.get("core", {}).get("savedObjects", {}).get("level") or status.get("overall", {}).get("level")
        if level != "available":
            raise RuntimeError(f"saved objects status {level!r}")

    wait_for(f"Kibana at {base}", probe, timeout)
    response = session.post(
        f"{base}/api/saved_objects/_import",
        params={"overwrite": "true"},
        files={"file": ("modelmon.ndjson", saved_objects(assets), "application/ndjson")},
        timeout=60,
    )
    if response.status_code != 200:
        raise SetupError(f"Kibana import failed ({response.status_code}): {response.text[:500]}")
    result = response.json()
    if not result.get("success"):
        errors = [f"{e.get('type')}/{e.get('id')}: {e.get('error')}" for e in result.get("errors", [])]
        raise SetupError("Kibana import reported errors: " + "; ".join(errors))
    return f"{result.get('successCount', 0)} Kibana saved objects"


def run(args: argparse.Namespace) -> int:
    try:
        assets = Path(args.assets)
        if not (assets / "elasticsearch" / "index-template.json").is_file():
            raise SetupError(f"{assets} is not the elk/ asset directory (pass --assets)")
        if not RETENTION.match(args.retention):
            raise SetupError(f"retention {args.retention!r}: expected a number and a unit, like 30d or 12h")
        client = connect(args)
        wait_for_elasticsearch(client, args.wait)
        es = elasticsearch_module()
        try:
            done = install_elasticsearch(client, assets, args.retention)
        except (es.ApiError, es.TransportError) as exc:
            raise SetupError(f"Elasticsearch refused the templates: {exc}") from exc
        if args.kibana_url:
            done.append(install_kibana(args.kibana_url, credentials(args), assets, args.wait, args.es_ca_certs))
    except SetupError as exc:
        print(f"modelmon setup: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(f"modelmon setup: {line}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``setup`` subcommand of ``modelmon``."""
    p = commands.add_parser(
        "setup", help="install Elasticsearch templates, ILM policy and Kibana saved objects (idempotent)"
    )
    add_connection_arguments(p)
    p.add_argument("--kibana-url", default=os.environ.get("KIBANA_URL"), help="default: $KIBANA_URL; none: skip Kibana")
    p.add_argument("--assets", default=str(DEFAULT_ASSETS), help="the elk/ directory (default: %(default)s)")
    p.add_argument("--retention", default="30d", help="delete events older than this (ILM), default %(default)s")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for each server, default %(default)s")
    p.set_defaults(run=run)
