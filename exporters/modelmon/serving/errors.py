"""Counting monitoring failures: swallowed, counted, logged at most once a minute."""
from __future__ import annotations

import logging
import threading
import time

from typing import Iterable

from prometheus_client import Counter

log = logging.getLogger("modelmon")
LOG_INTERVAL_SECONDS = 60.0


class InternalErrors:
    """Counts failures in ``modelmon_internal_errors_total{stage}``; never raises."""

    def __init__(self, counter: Counter, stages: Iterable[str]):
        self._children = {stage: counter.labels(stage) for stage in stages}
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def count(self, stage: str, detail: object) -> None:
        try:
            self._children[stage].inc()
            now = time.monotonic()
            with self._lock:
                if now - self._last_logged.get(stage, -LOG_INTERVAL_SECONDS) < LOG_INTERVAL_SECONDS:
                    return
                self._last_logged[stage] = now
            log.warning(
                "modelmon %s problem (counted in modelmon_internal_errors_total, logged once a minute at most): %s",
                stage,
                detail,
                exc_info=detail if isinstance(detail, BaseException) else None,
            )
        except Exception:  # the last line of defence: monitoring never breaks the service
            pass
