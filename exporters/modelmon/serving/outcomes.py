"""Delayed labels: predictions wait in a store until their label arrives.

The store is SQLite (standard library): in memory by default (one process; labels
must reach the process that made the prediction before it restarts), or a file
shared by every worker and replica on the host, which survives restarts
(``OutcomeStore("/var/lib/modelmon/outcomes.sqlite")``). Either way it is bounded:
predictions older than ``ttl_seconds`` or beyond ``max_rows`` are dropped and
counted as ``modelmon_outcomes_unmatched_total{reason="expired"}``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .bins import INVALID, category_key

log = logging.getLogger("modelmon")

DEFAULT_TTL_SECONDS = 7 * 86400.0
EXPIRE_EVERY_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL, id TEXT NOT NULL, version TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (model, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_at ON predictions (at);
"""


class DroppedCounts:
    """Predictions a store dropped unlabelled (expired, evicted), per (model, version).

    For stores with a ``_lock`` and a ``_dropped`` dict, which ``take_dropped`` empties.
    """

    _lock: threading.Lock
    _dropped: dict[tuple[str, str], int]

    def _count_dropped(self, model_versions: Iterable[tuple[str, str]]) -> None:
        for key in model_versions:
            self._dropped[key] = self._dropped.get(key, 0) + 1

    def take_dropped(self) -> dict[tuple[str, str], int]:
        """Predictions dropped unlabelled since the last call, per (model, version)."""
        with self._lock:
            dropped, self._dropped = self._dropped, {}
        return dropped


class OutcomeStore(DroppedCounts):
    """Predictions awaiting a label, keyed by (model, prediction id).

    The hot path only appends to a queue; a background thread writes the queue to
    SQLite every half second (sooner when it grows; a caller that outruns it writes
    itself), drops what is past the TTL or beyond ``max_rows`` (oldest first), and keeps
    count of the dropped per model version.
    """

    WRITE_INTERVAL_SECONDS = 0.5
    PENDING_LIMIT = 10_000  # queued predictions that wake the writer early
    MAX_PENDING = 100_000  # queued predictions beyond which the caller writes them itself
    WRITE_CHUNK = 5_000  # predictions written (and oldest dropped) per transaction

    def __init__(self, path: str | os.PathLike | None = None, *, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 max_rows: int | None = None):
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self.path = None if path is None else Path(path)
        self.ttl_seconds = ttl_seconds
        self.max_rows = max_rows if max_rows is not None else (100_000 if path is None else 10_000_000)
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be positive, got {self.max_rows}")
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, str, str, Any, float]] = deque()  # appends need no lock
        self._dropped: dict[tuple[str, str], int] = {}
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._rows = 0  # rows in the table, counted on connect, kept up to date after
        self._last_expiry = 0.0
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._connect()  # fail at start-up on an unusable path
        _stores.add(self)

    def _connect(self) -> sqlite3.Connection:
        """This process's connection (a forked worker opens its own)."""
        if self._db is None or self._pid != os.getpid():
            if self.path is None:
                db = sqlite3.connect(":memory:", check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db, self._pid = db, os.getpid()
            self._rows = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
        return self._db

    def remember(self, row: tuple[str, str, str, Any, float]) -> None:
        """Hot path: queue (model, id, version, predicted value, unix time) for the writer."""
        self._pending.append(row)
        if self._writer is None:
            self._start_writer()
        if len(self._pending) >= self.PENDING_LIMIT:
            if len(self._pending) >= self.MAX_PENDING:  # the writer fell behind: slow down, lose nothing
                self.write_pending()
            self._wake.set()

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, name="modelmon-outcomes", daemon=True)
                self._writer.start()

    def _write_forever(self) -> None:
        while True:
            self._wake.wait(self.WRITE_INTERVAL_SECONDS)
            self._wake.clear()
            try:
                self.write_pending()
                self.expire()
            except Exception as exc:  # a full disk, a locked file: keep the queue, try again
                log.warning("modelmon: could not write predictions awaiting labels: %s", exc)

    def after_fork(self) -> None:
        """In a forked child: the parent's queue and writer thread are the parent's."""
        self._lock = threading.Lock()
        self._pending = deque()
        self._writer = None
        self._wake = threading.Event()

    def write_pending(self) -> None:
        """Write the queued predictions, so other workers and a restarted process see them."""
        with self._lock:
            self._write_queue()

    def _write_queue(self) -> None:
        while self._pending:
            self._put(self._drain())

    def _drain(self) -> list[tuple[str, str, str, Any, float]]:
        """The oldest queued predictions, at most WRITE_CHUNK: short transactions, small buffers."""
        return [self._pending.popleft() for _ in range(min(len(self._pending), self.WRITE_CHUNK))]

    def put(self, rows: Iterable[tuple[str, str, str, Any, float]]) -> None:
        """Store (model, id, version, predicted value, unix time) rows; a repeated id replaces."""
        with self._lock:
            self._put(list(rows))

    def _put(self, rows: list[tuple[str, str, str, Any, float]]) -> None:
        if not rows:
            return
        db = self._connect()
        with db:
            db.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)",
                           [(m, i, v, json.dumps(value), at) for m, i, v, value, at in rows])
            self._rows += len(rows)
            if self._rows > self.max_rows:
                self._rows = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
                excess = self._rows - self.max_rows
                if excess > 0:
                    self._count_dropped(self._drop_oldest(db, excess))
                    self._rows -= excess

    def take(self, model: str, prediction_id: str) -> tuple[str, Any] | None:
        """Remove and return (version, predicted value) of a prediction, or None."""
        with self._lock:
            self._write_queue()
            db = self._connect()
            with db:
                row = db.execute(
                    "DELETE FROM predictions WHERE model = ? AND id = ? RETURNING version, value",
                    (model, prediction_id),
                ).fetchone()
            self._rows -= row is not None
        return None if row is None else (row[0], json.loads(row[1]))

    def expire(self, now: float | None = None, *, force: bool = False) -> None:
        """Drop predictions past the TTL (at most once a minute unless forced)."""
        now = time.time() if now is None else now
        if not force and now - self._last_expiry < EXPIRE_EVERY_SECONDS:
            return
        self._last_expiry = now
        with self._lock:
            db = self._connect()
            with db:
                rows = db.execute("DELETE FROM predictions WHERE at < ? RETURNING model, version",
                                  (now - self.ttl_seconds,)).fetchall()
            self._rows -= len(rows)
            self._count_dropped(map(tuple, rows))

    @staticmethod
    def _drop_oldest(db: sqlite3.Connection, n: int) -> list[tuple[str, str]]:
        oldest = db.execute("SELECT model, id, version FROM predictions ORDER BY at LIMIT ?", (n,)).fetchall()
        db.executemany("DELETE FROM predictions WHERE model = ? AND id = ?", [(m, i) for m, i, _ in oldest])
        return [(m, v) for m, _, v in oldest]

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT count(*) FROM predictions").fetchone()[0]


_stores: "weakref.WeakSet[OutcomeStore]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


_default_store: OutcomeStore | None = None
_default_lock = threading.Lock()


def default_store() -> OutcomeStore:
    """The process-wide in-memory store shared by monitors that were given none."""
    global _default_store
    with _default_lock:
        if _default_store is None:
            _default_store = OutcomeStore()
        return _default_store


class OutcomeTracker:
    """Remembers one monitor's predictions and joins delayed labels to them.

    Quality is measured on the model's first output: accuracy for a categorical
    output, absolute and squared error for a numeric one.
    """

    def __init__(self, model: str, version: str, categorical: bool, store: OutcomeStore, metrics, errors):
        self.model, self.version, self.categorical = model, version, categorical
        self.store = store
        self._metrics, self._errors = metrics, errors
        if hasattr(store, "on_error"):  # a store that fails in the background (Redis) counts here
            store.on_error = lambda exc: errors.count("outcome", exc)
        metrics["outcomes"].labels(model, version)  # at 0 from the start: accuracy exists before a first hit
        if categorical:
            metrics["outcomes_correct"].labels(model, version)

    def _encode(self, value: Any) -> Any:
        """The value compared with labels: a category key, or a finite float (None: unusable).

        Hot path, and quiet: numpy warns when float() is given a masked element (nan) or a
        complex number (its real part), so those are None, like NaN, before float() sees them.
        """
        if self.categorical:
            return category_key(value)
        if type(value) is not float:
            if (isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value)
                    or getattr(getattr(value, "dtype", None), "kind", None) == "c"):
                return None
            try:
                value = float(value)
            except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
                return None
        return value if math.isfinite(value) else None

    def remember(self, prediction_id: Any, value: Any) -> None:
        """Hot path: buffer (id, predicted value); the store is written on flush."""
        self.store.remember((self.model, str(prediction_id), self.version, self._encode(value), time.time()))

    def flush(self) -> None:
        self.store.write_pending()
        for (model, version), n in self.store.take_dropped().items():
            self._metrics["outcomes_unmatched"].labels(model, version, "expired").inc(n)

    def record(self, prediction_id: Any, actual: Any) -> bool:
        """Join one label to its prediction; False (and counted) when it cannot be."""
        found = self.store.take(self.model, str(prediction_id))
        if found is None:
            self._metrics["outcomes_unmatched"].labels(self.model, self.version, "unknown_id").inc()
            return False
        version, predicted = found
        labels = (self.model, version)
        actual_value = self._encode(actual)
        if actual_value is None or actual_value == INVALID or predicted is None:
            self._metrics["outcomes_unmatched"].labels(*labels, "invalid").inc()
            return False
        self._metrics["outcomes"].labels(*labels).inc()
        if self.categorical:
            if actual_value == predicted:
                self._metrics["outcomes_correct"].labels(*labels).inc()
        else:
            error = abs(actual_value - predicted)
            self._metrics["outcome_absolute_error"].labels(*labels).observe(error)
            self._metrics["outcome_squared_error"].labels(*labels).observe(error * error)
        return True
