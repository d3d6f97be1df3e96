"""Traffic for the demo service, one scenario per command.

    python -m demo.traffic steady            # training-like rows, labels 20 s later
    python -m demo.traffic drift             # GrLivArea 80% larger, LotFrontage sent in metres
    python -m demo.traffic missing           # GarageCars stops arriving
    python -m demo.traffic new-category      # Neighborhood "Atlantis" in a third of the rows
    python -m demo.traffic nan               # the model answers NaN for a fifth of the rows
    python -m demo.traffic slow              # 300 ms added to every prediction
    python -m demo.traffic quality-drop      # labels 60% above the predictions' truth

Options: --url (default http://127.0.0.1:8000), --rate requests/s, --duration seconds.
Labels go to /feedback with the service's bearer token: MODELMON_FEEDBACK_TOKEN, or the
file MODELMON_FEEDBACK_TOKEN_FILE names, or the one `make demo` writes for its run
(demo/build/stack/feedback-token); none of them: no token.
"""
from __future__ import annotations

import argparse
import math
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pandas as pd
import requests

from modelmon.serving.feedback import resolve_token

from .model import BUILD, DATA, FEATURES, TARGET

LABEL_DELAY_SECONDS = 20.0
STACK_TOKEN_FILE = BUILD / "stack" / "feedback-token"  # demo.stack's default --workdir


def feedback_token() -> str | None:
    """The token the service's /feedback wants: as the service reads it, else make demo's."""
    token = resolve_token()
    if token is None and STACK_TOKEN_FILE.is_file():
        token = resolve_token(token_file=STACK_TOKEN_FILE)
    return token


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _scale(**factors: float) -> Callable[[dict], dict]:
    return lambda row: {**row, **{k: row[k] * f for k, f in factors.items() if row.get(k) is not None}}


SCENARIOS: dict[str, tuple[Callable[[dict], dict], str | None, float]] = {
    # name: (row transform, X-Demo-Fault header, factor applied to the true price)
    "steady": (lambda row: row, None, 1.0),
    "drift": (_scale(GrLivArea=1.8, LotFrontage=0.3048), None, 1.0),
    "missing": (lambda row: {**row, "GarageCars": None}, None, 1.0),
    "new-category": (lambda row: {**row, "Neighborhood": "Atlantis"} if random.random() < 0.34 else row, None, 1.0),
    "nan": (lambda row: row, "nan", 1.0),
    "slow": (lambda row: row, "slow", 1.0),
    "quality-drop": (lambda row: row, None, 1.6),
}


class Traffic:
    """Sends one scenario's predictions at a fixed rate and their labels later."""

    def __init__(self, url: str, scenario: str, rate: float, token: str | None = None):
        self.url, self.rate = url.rstrip("/"), rate
        self.feedback_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.transform, self.fault, self.truth_factor = SCENARIOS[scenario]
        frame = pd.read_csv(DATA / "train.csv")
        self.rows = [(_clean(r[FEATURES].to_dict()), float(r[TARGET])) for _, r in frame.iterrows()]
        self.labels: list[tuple[float, str, float]] = []  # (due time, prediction id, actual)
        self.lock = threading.Lock()
        self.sent = self.failed = 0

    def predict_one(self) -> None:
        features, price = random.choice(self.rows)
        prediction_id = uuid.uuid4().hex
        faulty = self.fault == "slow" or (self.fault is not None and random.random() < 0.2)
        body = {"prediction_id": prediction_id, "features": self.transform(features)}
        try:
            response = requests.post(f"{self.url}/predict", json=body, timeout=10,
                                     headers={"X-Demo-Fault": self.fault} if faulty else {})
            ok = response.status_code < 500
        except requests.RequestException:
            ok = False
        with self.lock:
            self.sent += 1
            self.failed += not ok
            if ok:
                self.labels.append((time.monotonic() + LABEL_DELAY_SECONDS, prediction_id,
                                    price * self.truth_factor))

    def send_due_labels(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [x for x in self.labels if x[0] <= now]
            self.labels = [x for x in self.labels if x[0] > now]
        if due:
            body = [{"prediction_id": pid, "actual": actual} for _, pid, actual in due]
            try:
                response = requests.post(f"{self.url}/feedback", json=body, headers=self.feedback_headers, timeout=10)
                if response.status_code != 200:
                    print(f"{len(due)} labels refused: {response.status_code} {response.text[:200]}", flush=True)
            except requests.RequestException:
                print(f"could not send {len(due)} labels", flush=True)

    def run(self, duration: float) -> None:
        end = time.monotonic() + duration
        with ThreadPoolExecutor(max_workers=8) as pool:
            while time.monotonic() < end:
                tick = time.monotonic()
                for _ in range(max(1, round(self.rate))):
                    pool.submit(self.predict_one)
                self.send_due_labels()
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.traffic", description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=math.inf, help="seconds (default: until Ctrl-C)")
    args = parser.parse_args()
    traffic = Traffic(args.url, args.scenario, args.rate, token=feedback_token())
    print(f"{args.scenario}: {args.rate:g} requests/s to {args.url}", flush=True)
    try:
        traffic.run(args.duration)
    except KeyboardInterrupt:
        pass
    print(f"sent {traffic.sent} predictions, {traffic.failed} failed", flush=True)


if __name__ == "__main__":
    main()
