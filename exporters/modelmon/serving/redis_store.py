"""Delayed labels across hosts: predictions wait in Redis until their label arrives.

``ModelMonitor(..., outcomes="redis://redis.monitoring:6379/0")`` (or ``rediss://`` for
TLS, ``unix:///run/redis.sock?db=0``): every replica remembers its predictions in the
same Redis, so a label posted to any replica is joined to a prediction made on any
other. Needs the ``redis`` client (``pip install modelmon[redis]``).

Like the SQLite store, the hot path only appends to a per-process queue. A background
thread writes the queue to Redis in pipelines of ``SET key value EX ttl`` every quarter
second. Redis that is down or slow never blocks ``observe``: the queue is bounded
(``max_pending``), what is beyond it is dropped and counted, and failed writes are kept
and retried with backoff, each failure counted in
``modelmon_internal_errors_total{stage="outcome"}``. A label (``record_outcome``) reads
its prediction (GET) and deletes it (DEL, which only one replica can win) with a short
socket timeout (``timeout``, 0.25 s by default); a failure is counted and the label
reported unmatched, and a GET that timed out leaves the prediction for a retried label.

Memory is bounded by the TTL (``ttl`` seconds, 7 days by default) and by Redis' own
``maxmemory`` with ``maxmemory-policy volatile-ttl``, which evicts the predictions nearest
their expiry, the oldest, first. Redis expires and evicts silently: a label that comes
after its prediction left Redis is counted ``unknown_id``, not ``expired``.
"""
from __future__ import annotations

import atexit
import json
import math
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from .outcomes import DEFAULT_TTL_SECONDS, DroppedCounts

SCHEMES = ("redis", "rediss", "unix")
DEFAULT_TIMEOUT_SECONDS = 0.25
DEFAULT_PREFIX = "modelmon:outcome"
DEFAULT_MAX_PENDING = 100_000
EXPECTED = ("expected redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path.sock, "
            "with optional ?ttl=<seconds>&timeout=<seconds>&prefix=<key prefix>&max_pending=<predictions>")


def redacted(url: str) -> str:
    """The URL with its password (and user) hidden, for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    if parts.query:
        query = [(k, "***" if _secret(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query="&".join(f"{k}={v}" for k, v in query))
    return urlunsplit(parts)


def _secret(name: str) -> bool:
    return any(word in name.lower() for word in ("pass", "secret", "token", "user", "auth"))


class RedisOutcomeStore(DroppedCounts):
    """Predictions awaiting a label in Redis, keyed by (model, prediction id).

    One key per prediction, ``<prefix>:<model>:<id>`` (``:`` and ``%`` in the model name
    percent-encoded), holding ``[version, value]`` as JSON, with an expiry. Bad URLs and a
    missing client fail here, at start-up; an unreachable Redis does not (it is counted).
    """

    WRITE_INTERVAL_SECONDS = 0.25
    WRITE_CHUNK = 1_000  # predictions per pipeline: one round trip, a few tens of KB
    MAX_BACKOFF_SECONDS = 5.0
    FAIL_FAST_SECONDS = 1.0  # after a failure, labels fail at once for this long (or until a write succeeds)

    def __init__(self, url: str, *, ttl_seconds: float | None = None, timeout: float | None = None,
                 prefix: str | None = None, max_pending: int | None = None):
        self.url = url
        self.safe_url = redacted(url)
        options = self._parse(url)
        self.ttl_seconds = float(ttl_seconds if ttl_seconds is not None else options.get("ttl", DEFAULT_TTL_SECONDS))
        self.timeout = float(timeout if timeout is not None else options.get("timeout", DEFAULT_TIMEOUT_SECONDS))
        self.prefix = prefix if prefix is not None else options.get("prefix", DEFAULT_PREFIX)
        self.max_pending = int(max_pending if max_pending is not None
                               else options.get("max_pending", DEFAULT_MAX_PENDING))
        if not self.ttl_seconds > 0 or not math.isfinite(self.ttl_seconds):
            raise ValueError(f"outcome store {self.safe_url}: ttl must be a positive number of seconds")
        if not 0 < self.timeout <= 60:
            raise ValueError(f"outcome store {self.safe_url}: timeout must be between 0 and 60 seconds")
        if self.max_pending < 1:
            raise ValueError(f"outcome store {self.safe_url}: max_pending must be positive")
        try:
            import redis  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"outcome store {self.safe_url} needs the redis client: pip install 'modelmon[redis]'") \
                from exc
        self._base_url = options["base"]
        self._keys: dict[str, str] = {}
        self.on_error: Callable[[BaseException], None] = lambda exc: None
        self._dropped: dict[tuple[str, str], int] = {}
        self._client_pid = 0
        self._client = None
        self._reset()
        self._client_for_pid()  # builds the pool now: a URL redis-py refuses fails at start-up
        _stores.add(self)

    # -- set-up -----------------------------------------------------------------

    def _parse(self, url: str) -> dict[str, Any]:
        bad = f"outcome store {self.safe_url} is not a Redis URL this store can use: {EXPECTED}"
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError(bad) from None
        if parts.scheme not in SCHEMES:
            raise ValueError(bad)
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(bad)
        elif not parts.hostname:
            raise ValueError(bad)
        elif parts.path not in ("", "/") and not parts.path[1:].isdigit():
            raise ValueError(f"outcome store {self.safe_url}: the database must be a number (/0), "
                             f"got {parts.path!r}; {EXPECTED}")
        options: dict[str, Any] = {}
        keep = []  # query arguments for redis-py: only db (unix sockets)
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            try:
                if name in ("ttl", "timeout"):
                    options[name] = float(value)
                elif name == "max_pending":
                    options[name] = int(value)
                elif name == "prefix" and value:
                    options[name] = value
                elif name == "db" and value.isdigit():
                    keep.append(f"db={value}")
                else:
                    raise ValueError
            except ValueError:
                shown = "***" if _secret(name) else repr(value)
                raise ValueError(f"outcome store {self.safe_url}: unknown or bad argument {name}={shown}; "
                                 f"{EXPECTED}") from None
        options["base"] = urlunsplit(parts._replace(query="&".join(keep), fragment=""))
        return options

    def _client_for_pid(self):
        """This process's client (a forked worker builds its own pool)."""
        if self._client is None or self._client_pid != os.getpid():
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:
                # No retries inside redis-py: a failure comes back at once, the writer retries later.
                client = redis.Redis.from_url(
                    self._base_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                    retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
                    client_name="modelmon",
                )
            except (ValueError, TypeError) as exc:
                raise ValueError(f"outcome store {self.safe_url}: {type(exc).__name__}; {EXPECTED}") from None
            self._client, self._client_pid = client, os.getpid()
        return self._client

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, str, str, Any, float]] = deque()  # appends need no lock
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._failures = 0  # consecutive failed writes: the backoff
        self._down_until = 0.0  # monotonic time until which labels fail fast, without waiting on Redis

    def after_fork(self) -> None:
        """In a forked child: the parent's queue, writer thread and connections are the parent's."""
        self._reset()
        self._client = None

    def _key(self, model: str, prediction_id: str) -> str:
        base = self._keys.get(model)
        if base is None:
            base = self._keys[model] = f"{self.prefix}:{quote(model, safe='')}:"
        return base + prediction_id

    # -- hot path ---------------------------------------------------------------

    def remember(self, row: tuple[str, str, str, Any, float]) -> None:
        """Hot path: queue (model, id, version, predicted value, unix time); never waits on Redis."""
        if len(self._pending) >= self.max_pending:
            self.on_error(OverflowError(
                f"{len(self._pending)} predictions wait for {self.safe_url}: new ones dropped until it catches up"))
            return
        self._pending.append(row)
        if self._writer is None:
            self._start_writer()

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, name="modelmon-outcomes-redis",
                                                daemon=True)
                self._writer.start()

    # -- the writer -------------------------------------------------------------

    def _write_forever(self) -> None:
        while True:
            pause = self.WRITE_INTERVAL_SECONDS
            if self._failures:
                pause = min(self.MAX_BACKOFF_SECONDS, self.WRITE_INTERVAL_SECONDS * 2 ** min(self._failures, 10))
            self._wake.wait(pause)
            self._wake.clear()
            try:
                while self._pending:
                    with self._lock:  # one chunk at a time: a label waits for one round trip at most
                        self._write_chunk()
                    self._down_until = 0.0  # Redis answers again
                self._failures = 0
            except Exception as exc:  # down, slow, out of memory: keep the queue, count, back off
                self._failures += 1
                if _unreachable(exc):
                    self._down_until = time.monotonic() + self.FAIL_FAST_SECONDS
                self.on_error(exc)

    def write_pending(self) -> None:
        """Wake the writer (at scrape and on the flush timer); never waits on Redis."""
        if self._pending:
            self._wake.set()

    def sync(self) -> None:
        """Write the whole queue now (tests, shutdown); raises what Redis raises."""
        while self._pending:
            with self._lock:
                self._write_chunk()

    def _write_chunk(self) -> None:
        """Write the oldest WRITE_CHUNK queued predictions in one pipeline (under the lock).

        On failure they go back to the head of the queue, in order, for the next try.
        """
        chunk = [self._pending.popleft() for _ in range(min(len(self._pending), self.WRITE_CHUNK))]
        if not chunk:
            return
        try:
            expired = self._put(chunk)
        except BaseException:
            self._pending.extendleft(reversed(chunk))
            raise
        self._count_dropped(expired)

    def _put(self, rows: list[tuple[str, str, str, Any, float]]) -> list[tuple[str, str]]:
        now = time.time()
        expired = []
        pipe = self._client_for_pid().pipeline(transaction=False)
        for model, prediction_id, version, value, at in rows:
            left = self.ttl_seconds - (now - at)
            if left <= 0:  # waited in the queue past its time (a long outage)
                expired.append((model, version))
                continue
            pipe.set(self._key(model, prediction_id), json.dumps([version, value]), ex=max(1, math.ceil(left)))
        if len(pipe):
            pipe.execute()
        return expired

    def put(self, rows: Iterable[tuple[str, str, str, Any, float]]) -> None:
        """Store (model, id, version, predicted value, unix time) rows now; a repeated id replaces."""
        with self._lock:
            self._count_dropped(self._put(list(rows)))

    # -- labels -----------------------------------------------------------------

    def take(self, model: str, prediction_id: str) -> tuple[str, Any] | None:
        """Remove and return (version, predicted value) of a prediction, or None.

        This process's queued predictions go first (one chunk: the queue is short unless
        Redis was away), so a label that comes back to the same process always finds its
        prediction. Raises when Redis fails or answers slower than ``timeout``, and, for
        ``FAIL_FAST_SECONDS`` after a failure, at once: a batch of labels posted while Redis
        hangs waits for one timeout, not one per label.
        """
        if time.monotonic() < self._down_until:
            raise ConnectionError(f"outcome store {self.safe_url} failed less than {self.FAIL_FAST_SECONDS:g} s ago; "
                                  "label not joined")
        key = self._key(model, prediction_id)
        try:
            with self._lock:
                self._write_chunk()
            client = self._client_for_pid()
            # GET, then DEL: a GET that times out (a paused Redis runs it later) deletes nothing, so
            # the label can be posted again; DEL answering 1 makes this the one replica that joins it.
            raw = client.get(key)
            if raw is None or not client.delete(key):
                return None
        except Exception as exc:
            if _unreachable(exc):  # not for an answer Redis gave (out of memory, a foreign key)
                self._down_until = time.monotonic() + self.FAIL_FAST_SECONDS
            raise
        version, value = json.loads(raw)
        return version, value

    def pending(self) -> int:
        """Predictions queued in this process, not yet in Redis."""
        return len(self._pending)

    def __len__(self) -> int:
        """Predictions waiting in Redis under this prefix (a SCAN: for tests and diagnostics)."""
        return sum(1 for _ in self._client_for_pid().scan_iter(match=f"{self.prefix}:*", count=10_000))

    def __repr__(self) -> str:
        return f"RedisOutcomeStore({self.safe_url!r})"


def _unreachable(exc: BaseException) -> bool:
    """Redis did not answer in time, or could not be reached (rather than answering with an error)."""
    import redis.exceptions

    return isinstance(exc, (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


_stores: "weakref.WeakSet[RedisOutcomeStore]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store.after_fork()


def _write_at_exit() -> None:
    """Best effort on a clean exit (a recycled gunicorn worker): write what is queued, briefly."""
    deadline = time.monotonic() + 2.0
    for store in list(_stores):
        try:
            while store._pending and time.monotonic() < deadline:
                if not store._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break
                try:
                    store._write_chunk()
                finally:
                    store._lock.release()
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_write_at_exit)
