"""``modelmon setup`` against the real Elasticsearch node."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import free_port
from elastic import LINE, ROOT, elastic, es  # noqa: F401 (fixtures)

from modelmon.pipeline import elk_setup
from modelmon.cli import main
from modelmon.pipeline.elk_setup import DEFAULT_ASSETS, ilm_policy


def setup(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["setup", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_setup_twice_succeeds_and_leaves_the_same_templates(elastic, es, capsys):
    first = setup(capsys, "--es-url", elastic.url, "--wait", "30")
    templates = es.indices.get_index_template(name="logs-modelmon.predictions")["index_templates"]
    second = setup(capsys, "--es-url", elastic.url, "--wait", "30")
    assert first[0] == second[0] == 0, first[2] + second[2]
    assert first[1] == second[1]
    assert "skipped ILM: this cluster has no index lifecycle management" in first[1]
    assert es.indices.get_index_template(name="logs-modelmon.predictions")["index_templates"] == templates
    (template,) = templates
    body = template["index_template"]
    assert body["priority"] == 600 and body["index_patterns"] == ["logs-modelmon.predictions-*"]
    assert body["_meta"]["managed_by"] == "modelmon"
    components = es.cluster.get_component_template(name="modelmon-predictions@*")["component_templates"]
    assert {c["name"] for c in components} == {"modelmon-predictions@settings", "modelmon-predictions@mappings"}
    # The cluster can build an index from the templates (what a new data stream gets).
    simulated = es.indices.simulate_index_template(name="logs-modelmon.predictions-x")["template"]
    assert simulated["mappings"]["properties"]["modelmon"]["properties"]["inputs"]["type"] == "flattened"


def test_site_changes_in_the_custom_component_survive_setup(elastic, es, capsys):
    inputs = {"type": "flattened", "index": False}
    custom = {"mappings": {"properties": {"modelmon": {"properties": {"inputs": inputs}}}}}
    es.cluster.put_component_template(name="modelmon-predictions@custom", template=custom)
    try:
        assert setup(capsys, "--es-url", elastic.url, "--wait", "30")[0] == 0
        assert es.cluster.get_component_template(name="modelmon-predictions@custom")["component_templates"]
        simulated = es.indices.simulate_index_template(name="logs-modelmon.predictions-x")["template"]
        assert simulated["mappings"]["properties"]["modelmon"]["properties"]["inputs"]["index"] is False
    finally:
        es.cluster.delete_component_template(name="modelmon-predictions@custom")


def test_the_venv_client_works_with_its_own_line_and_names_the_fix_for_an_older_server(elastic):
    """`modelmon setup` with the client installed in the venv (9), without the PYTHONPATH that
    puts client 8 first in `make test`'s 8.19 run: against 9.x it installs the templates;
    against 8.x, which refuses client 9's compatible-with=9 headers, it fails at once (not
    after --wait) and says which client to install."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys, elasticsearch; from modelmon.cli import main; "
            "print(elasticsearch.__versionstr__, flush=True); sys.exit(main(sys.argv[1:]))")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, "setup", "--es-url", elastic.url, "--wait", "60"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    client = int(done.stdout.split(".")[0])
    if client <= int(LINE):
        assert done.returncode == 0, done.stderr
        assert "index template logs-modelmon.predictions" in done.stdout
    else:
        assert done.returncode == 1, done.stdout
        assert time.monotonic() - started < 30
        assert "Elasticsearch refused the client: the Python client elasticsearch" in done.stderr
        assert "pip install 'elasticsearch>=8.13,<9'" in done.stderr


def test_kibana_that_does_not_answer_fails_clearly(elastic, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = setup(capsys, "--es-url", elastic.url, "--kibana-url", url, "--wait", "2")
    assert code == 1
    assert f"modelmon setup: Kibana at {url} did not answer within 2s" in err


def test_elasticsearch_that_does_not_answer_fails_clearly(capsys):
    code, _, err = setup(capsys, "--es-url", f"http://127.0.0.1:{free_port()}", "--wait", "1")
    assert code == 1
    assert "modelmon setup: Elasticsearch did not answer within 1s" in err


def test_usage_errors_name_what_is_missing(capsys, monkeypatch):
    monkeypatch.delenv("ELASTICSEARCH_URL", raising=False)
    assert setup(capsys)[2] == "modelmon setup: no Elasticsearch URL: pass --es-url or set $ELASTICSEARCH_URL\n"
    code, _, err = setup(capsys, "--es-url", "http://127.0.0.1:1", "--retention", "30 days")
    assert code == 1 and "retention '30 days'" in err
    code, _, err = setup(capsys, "--es-url", "http://127.0.0.1:1", "--es-username", "elastic")
    assert code == 1 and "give both --es-username and --es-password" in err


def test_retention_sets_the_delete_phase():
    policy = ilm_policy(ROOT / "elk", "7d")["policy"]
    assert policy["phases"]["delete"]["min_age"] == "7d"
    assert policy["phases"]["hot"]["actions"]["rollover"]["max_age"] == "1d"


class FakeKibana(BaseHTTPRequestHandler):
    """Kibana's status and saved-objects import endpoints, recording what they receive."""

    requests: list[dict] = []
    answer: dict = {}

    def do_GET(self) -> None:
        self._reply({"status": {"overall": {"level": "available"}}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        url = urlparse(self.path)
        request = {"path": url.path, "query": parse_qs(url.query), "headers": dict(self.headers), "body": body}
        self.requests.append(request)
        self._reply(self.answer)

    def _reply(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kibana():
    """Kibana cannot run here (no build installable on this machine): a stand-in records
    the import request, so its form is checked; the objects themselves are checked against
    real events in test_elk_assets.py."""
    FakeKibana.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKibana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_saved_objects_are_imported_with_overwrite(elastic, kibana, capsys, monkeypatch):
    FakeKibana.answer = {"success": True, "successCount": 11}
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", "elastic")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "s3cret")  # the test node ignores credentials
    code, out, err = setup(capsys, "--es-url", elastic.url, "--kibana-url", kibana, "--wait", "10")
    assert code == 0, err
    assert "11 Kibana saved objects" in out
    (request,) = FakeKibana.requests
    assert request["path"] == "/api/saved_objects/_import"
    assert request["query"] == {"overwrite": ["true"]}
    assert request["headers"]["kbn-xsrf"]
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    assert request["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="modelmon.ndjson"' in request["body"]
    assert request["body"].count(b'"coreMigrationVersion":"8.8.0"') == 11


def test_import_errors_are_reported(elastic, kibana, capsys):
    FakeKibana.answer = {
        "success": False,
        "errors": [{"type": "lens", "id": "modelmon-lens-events", "error": {"type": "missing_references"}}],
    }
    code, _, err = setup(capsys, "--es-url", elastic.url, "--kibana-url", kibana, "--wait", "10")
    assert code == 1
    assert "Kibana import reported errors: lens/modelmon-lens-events" in err


def test_the_built_package_carries_the_assets(tmp_path):
    """A pip-installed modelmon finds elk/ itself (package data through exporters/modelmon/pipeline/elk)."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("modelmon-*.whl")
    expected = [p for p in sorted((ROOT / "elk").rglob("*")) if p.suffix in (".json", ".ndjson")]
    assert len(expected) >= 6
    with zipfile.ZipFile(wheel) as archive:
        for path in expected:
            name = "modelmon/pipeline/elk/" + path.relative_to(ROOT / "elk").as_posix()
            assert archive.read(name) == path.read_bytes(), name
    # Where `modelmon setup` looks by default, inside the package, beside its own module.
    assert DEFAULT_ASSETS.parent == Path(elk_setup.__file__).resolve().parent
    assert sorted(DEFAULT_ASSETS.rglob("*.*json")) == [DEFAULT_ASSETS / p.relative_to(ROOT / "elk") for p in expected]
