"""A real Elasticsearch for the tests, and prediction event files in the producer's format.

One node per test session, started on loopback by ``scripts/elasticsearch.sh`` (as an
unprivileged user when the tests run as root). Use the fixtures ``elastic`` (the node:
``url``, ``stop()``, ``start()``) and ``es`` (a client with the templates installed): import
them into a test module or conftest.py; the node is shared however many modules do.
Each test ships into its own namespace, so data streams never collide.

The node is of the current line, Elasticsearch 9.x (elk/VERSION, on Java 21+) unless
``MODELMON_TEST_ES=8`` picks the previous line, 8.19 (elk/VERSION-8, on Java 17+): `make
test` runs the setup and shipper tests on that line too, with the Python client 8.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from demo import native
from demo.native import free_port
from modelmon.pipeline.events import EventLog

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "elasticsearch.sh"
LINE = os.environ.get("MODELMON_TEST_ES", "9")  # the Elasticsearch line: 9 (current) or 8
if LINE not in ("8", "9"):
    raise RuntimeError(f"MODELMON_TEST_ES must be 8 or 9, not {LINE!r}")
os.environ["ES_LINE"] = LINE  # read by scripts/elasticsearch.sh, here and in the native stack
INSTALL_HINT = "run `make deps` (or scripts/elasticsearch.sh install) to install Java and Elasticsearch"


class ElasticNode(native.Elasticsearch):
    """The native stack's node, in a directory of its own: its data survives stop() and start()."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="modelmon-es-")), free_port())
        self.running = False

    def start(self) -> None:
        """Start the node (no-op if it runs) and wait until it is healthy."""
        if self.running:
            return
        try:
            super().start()
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{INSTALL_HINT}")
        self.running = True

    def stop(self) -> None:
        super().stop()
        self.running = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_node: ElasticNode | None = None


def node() -> ElasticNode:
    """The session's node, started on first use; fails (never skips) when it cannot run."""
    global _node
    if _node is None:
        if shutil.which("java") is None and not os.environ.get("ES_JAVA_HOME"):
            pytest.fail(f"no Java found: {INSTALL_HINT}")
        home = subprocess.run([str(SCRIPT), "home"], capture_output=True, text=True, check=False)
        if home.returncode != 0:
            pytest.fail(f"Elasticsearch (line {LINE}) is not installed: {INSTALL_HINT}\n{home.stderr}")
        started = ElasticNode()
        try:
            started.start()
        except BaseException:
            started.remove()
            raise
        _node = started
    return _node


@pytest.fixture(scope="session")
def elastic() -> Iterator[ElasticNode]:
    """The session's Elasticsearch node (started once, removed at the end)."""
    global _node
    yield node()
    if _node is not None:
        _node.remove()
        _node = None


@pytest.fixture(scope="session")
def es(elastic):
    """A client of the session's node with the modelmon templates installed."""
    from elasticsearch import Elasticsearch

    from modelmon.pipeline.elk_setup import DEFAULT_ASSETS, install_elasticsearch

    client = Elasticsearch(elastic.url, request_timeout=30)
    install_elasticsearch(client, DEFAULT_ASSETS)
    return client


def namespace() -> str:
    """A fresh data stream namespace."""
    return "t" + uuid.uuid4().hex[:12]


# -- events written by the producer (modelmon.events.EventLog) -----------------------------

NEIGHBORHOODS = ("CollgCr", "Veenker", "Crawfor", "NoRidge", "Mitchel")


def write_events(directory: Path, count: int, *, run: str = "r", first: int = 0, **log_options) -> None:
    """Write prediction events ``first`` ... ``first + count - 1`` with EventLog, as a
    service would: every sixth row misses a feature, every seventh has an unseen category,
    every eleventh is out of range, every 50th prediction failed. ``event.id`` is
    ``<run>-<i>``; ``log_options`` go to EventLog (max_bytes, backup_count)."""
    log = EventLog(directory, labels={"region": "eu"}, **log_options)
    try:
        for i in range(first, first + count):
            flags = {
                "missing": ["LotFrontage"] if i % 6 == 0 else [],
                "invalid": [],
                "unseen": ["Neighborhood"] if i % 7 == 0 else [],
                "out_of_range": ["LotArea"] if i % 11 == 0 else [],
            }
            inputs = {
                "LotArea": 8450 + i % 900,
                "Neighborhood": "Atlantis" if i % 7 == 0 else NEIGHBORHOODS[i % 5],
                "LotFrontage": None if i % 6 == 0 else 65.0,
                "OverallQual": i % 10,
            }
            failed = i % 50 == 0
            log.write(
                model="house-price",
                version="1.4.0" if i % 4 else "1.5.0",
                reference="f254665e2fe1",
                inputs=inputs,
                outputs={} if failed else {"SalePrice": 150000.0 + 97.0 * (i % 1000)},
                flags=flags,
                nonfinite_prediction=False,
                prediction_id=f"{run}-{i}",
                trace_id=uuid.uuid5(uuid.NAMESPACE_OID, str(i)).hex if i % 3 == 0 else None,
                duration=0.001 + (i % 500) * 1e-6,
                error=ValueError("could not convert string to float") if failed else None,
            )
    finally:
        log.close()
