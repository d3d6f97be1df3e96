"""A real process serving /metrics passes `promtool check metrics` without a lint warning
(Debian's promtool 2.42 and 3.x's)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port
from servers import LINES, binary

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("line", LINES)
def test_standalone_server_output_passes_promtool_lint(tmp_path, reference, line):
    reference.save(tmp_path / "reference.yaml")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(FIXTURES / "serve_metrics.py"), str(tmp_path / "reference.yaml"),
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()
        deadline = time.monotonic() + 10
        while True:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "metrics server did not answer"
                time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    assert 'modelmon_predictions_total{model="house",version="1.0"} 4.0' in body
    assert 'modelmon_internal_errors_total{stage="input"} 1.0' in body
    lint = subprocess.run([binary("promtool", line), "check", "metrics"], input=body, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", lint
