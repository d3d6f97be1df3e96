"""A webhook receiver for Alertmanager that needs no secret: ``python -m demo.alert_sink``.

Prints one line per alert of every notification (receiver, status, alert name, model,
summary, runbook) and shows the last 200 of them at GET /. The compose stack and
``make demo`` route every receiver here until you configure Slack or email.
"""
from __future__ import annotations

import argparse
import json
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECENT: deque[str] = deque(maxlen=200)


def describe(receiver: str, notification: dict) -> list[str]:
    """One readable line per alert of an Alertmanager webhook notification."""
    lines = []
    for alert in notification.get("alerts", []):
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        lines.append(f"[{receiver}] {alert.get('status', '?').upper()} {labels.get('alertname', '?')} "
                     f"model={labels.get('model', '-')} version={labels.get('version', '-')}: "
                     f"{notes.get('summary', '')} runbook: {notes.get('runbook_url', '-')}")
    return lines


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "expected a JSON notification")
            return
        for line in describe(self.path.strip("/") or "default", notification):
            RECENT.append(line)
            print(line, flush=True)
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        body = ("\n".join(RECENT) or "no notification yet").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # one line per alert is enough
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.alert_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9099)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
