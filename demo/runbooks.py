"""The runbooks over HTTP, where the alerts' runbook links point: ``python -m demo.runbooks``.

Serves docs/runbooks/ (``--directory``) read-only, Markdown as ``text/plain;
charset=utf-8`` so that a browser shows the page instead of downloading it. Prometheus
builds every ``runbook_url`` from its external label ``runbook_base_url``
(prometheus/prometheus.yml): the compose ``runbooks`` service and ``make demo`` serve
this folder there; point the label at your own wiki instead.
"""
from __future__ import annotations

import argparse
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks"


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".md": "text/plain; charset=utf-8"}

    def log_message(self, *args) -> None:  # quiet, like the alert sink
        pass


def server(directory: Path, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server of ``directory`` on ``host:port`` (call ``serve_forever``)."""
    if not directory.is_dir():
        raise SystemExit(f"python -m demo.runbooks: {directory} is not a directory")
    return ThreadingHTTPServer((host, port), functools.partial(Handler, directory=str(directory)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.runbooks", description=__doc__.split("\n")[0])
    parser.add_argument("--directory", type=Path, default=RUNBOOKS)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9098)
    args = parser.parse_args()
    server(args.directory, args.host, args.port).serve_forever()


if __name__ == "__main__":
    main()
