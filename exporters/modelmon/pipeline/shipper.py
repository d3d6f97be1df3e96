"""``modelmon ship``: deliver the prediction event files to an Elasticsearch data stream.

Reading is at least once, writing is idempotent: every event is sent with
``op_type=create`` and ``_id`` = its ``event.id``, so a resend after a crash or a
timeout comes back as 409 (counted as a duplicate) and every event is in Elasticsearch
exactly once.

Files are followed by (st_dev, st_ino) across the producer's renames
(``predictions-<pid>.jsonl`` -> ``.jsonl.1`` -> ...), and kept open until read to the end,
so a file rotated away while the shipper runs is still shipped. A registry file
(JSON, replaced atomically after every acknowledged batch) holds each file's offset and a
fingerprint of its first bytes, so a restart, even after SIGKILL, resumes where the last
acknowledged batch ended and never mistakes a new file on a reused inode for an old one.
What was deleted or truncated unread while the shipper was not running is counted in
``modelmon_shipper_lost_bytes_total`` and logged.

A line without its newline yet is left for later. A line that is not a JSON object is
counted as corrupt and written to the dead-letter file, as is every document Elasticsearch
rejects (mapping conflicts, other 4xx); the rest keep flowing. Elasticsearch down, 429 and
5xx are retried with capped exponential backoff, the files staying on disk meanwhile.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .elk_setup import SetupError, add_connection_arguments, client_too_new, connect, elasticsearch_module
from .events import parse_timestamp
from ..serving.metrics import SHIPPER_CONTRACT

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger("modelmon.shipper")

DATASET = "modelmon.predictions"
PATTERN = "predictions-*.jsonl*"
FINGERPRINT_BYTES = 1024
READ_BYTES = 1 << 20  # also the longest line accepted
NAMESPACE = re.compile(r"^[a-z0-9_]{1,100}$")
DUPLICATE = 409
RETRIED_4XX = frozenset((401, 403, 404, 408, 429))  # configuration or load: retry, never drop


def data_stream(namespace: str) -> str:
    """``logs-modelmon.predictions-<namespace>``."""
    if not NAMESPACE.match(namespace):
        raise ValueError(f"namespace {namespace!r}: lowercase letters, digits and _ only")
    return f"logs-{DATASET}-{namespace}"


@dataclass
class ShipperConfig:
    """Where to read, where to write, and the bounds that keep memory flat."""

    events_dir: Path
    namespace: str = "default"
    state_dir: Path | None = None  # registry and dead letters; default <events_dir>/.modelmon-shipper
    batch_size: int = 2000  # documents per bulk request
    batch_bytes: int = 8 << 20  # bytes per bulk request
    in_flight: int = 2  # bulk requests sent and not yet acknowledged
    poll_interval: float = 0.5  # seconds between looks at idle files
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    close_inactive: float = 300.0  # close a fully read file unchanged this long (seconds)

    def __post_init__(self) -> None:
        self.events_dir = Path(self.events_dir)
        self.state_dir = Path(self.state_dir) if self.state_dir else self.events_dir / ".modelmon-shipper"
        self.data_stream = data_stream(self.namespace)


@dataclass
class Tracked:
    """One event file: where it is, how far it is shipped, and how to recognise it."""

    key: tuple[int, int]  # (st_dev, st_ino)
    path: str
    offset: int = 0  # bytes acknowledged by Elasticsearch
    read_to: int = 0  # bytes taken into batches (acknowledged or in flight)
    size: int = 0  # size at the last look
    mtime: float = 0.0
    fp_len: int = 0
    fp: str = ""
    fd: int | None = None
    gone: bool = False  # no longer in the directory (rotated away): read to the end, then forget

    def record(self) -> dict:
        return {
            "dev": self.key[0], "ino": self.key[1], "path": self.path, "offset": self.offset,
            "size": self.size, "fp_len": self.fp_len, "fp": self.fp,
        }  # fmt: skip


def fingerprint(fd: int, length: int) -> str:
    return hashlib.sha1(os.pread(fd, length, 0)).hexdigest()


@dataclass
class Batch:
    """Lines read for one bulk request, and where each file stands once it is acknowledged."""

    docs: list[tuple[bytes, bytes, str, int]] = field(default_factory=list)  # (action, line, path, offset)
    timestamps: list[object] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)
    ends: dict[tuple[int, int], int] = field(default_factory=dict)
    size: int = 0
    corrupt: int = 0

    def full(self, config: ShipperConfig) -> bool:
        return len(self.docs) >= config.batch_size or self.size >= config.batch_bytes


class _Stopped(Exception):
    """stop() was called while a batch waited to be retried."""


class _Request(threading.Thread):
    """A bulk request running while the next batch is read; ``outcome`` once joined."""

    def run(self) -> None:
        self.outcome = self._target()


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def _epoch(timestamp: object) -> float | None:
    parsed = parse_timestamp(timestamp)
    return None if parsed is None else parsed.timestamp()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Shipper:
    """Tails ``<events_dir>/predictions-*.jsonl*`` into ``logs-modelmon.predictions-<namespace>``.

    ``run()`` loops until ``stop()``; ``start()`` runs it in a thread (and serves the
    metrics on ``metrics_port`` if given).
    """

    def __init__(
        self, client: "Elasticsearch", config: ShipperConfig, registry: CollectorRegistry | None = None
    ) -> None:
        self.client = client
        self.config = config
        self.registry = CollectorRegistry() if registry is None else registry
        self.metrics = {
            spec.name.removeprefix("modelmon_shipper_"): (Counter if spec.kind == "counter" else Gauge)(
                spec.name, spec.help, registry=self.registry
            )
            for spec in SHIPPER_CONTRACT
        }
        self._last_event = 0.0
        self.metrics["lag_seconds"].set_function(lambda: time.time() - self._last_event if self._last_event else 0.0)
        self.registry_path = config.state_dir / "registry.json"
        self.dead_letter_path = config.state_dir / "dead-letter.jsonl"
        # The bulk action line, serialized once: only the _id changes.
        self._action_prefix = b'{"create":{"_index":' + json.dumps(config.data_stream).encode() + b',"_id":'
        self.files: dict[tuple[int, int], Tracked] = {}
        self._recovered: dict[tuple[int, int], dict] = {}
        self._ready = False
        self._in_flight: deque[tuple[Batch, _Request]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, metrics_port: int | None = None, metrics_addr: str = "127.0.0.1") -> None:
        """Run in a daemon thread; serve the metrics on ``metrics_port`` when given."""
        if metrics_port is not None:
            self._server, _ = start_http_server(metrics_port, metrics_addr, registry=self.registry)
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="modelmon-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish or abandon the batch in flight (it is resent on the next start) and return."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def run(self) -> None:
        self._stop.clear()
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    idle = not self.run_once()
                    failures = 0
                except _Stopped:
                    raise
                except Exception:  # read again from the acknowledged offsets
                    log.exception("shipping failed; retrying")
                    self._rewind()
                    failures += 1
                    idle = True
                if idle:
                    self._stop.wait(self.config.poll_interval * min(2**failures, 60))
        except _Stopped:
            pass
        finally:
            self._rewind()  # what is in flight is not acknowledged: it is sent again
            for tracked in self.files.values():
                self._close(tracked)
            self.files.clear()
            self._ready = False

    def run_once(self) -> int:
        """Look at the directory and read a batch; finish the batch in flight (retrying it
        until it is acknowledged), then send the new one. Returns the number of lines read
        (0: idle, and nothing in flight any more).

        Up to ``in_flight`` bulk requests run while the next batch is read and parsed, so
        Python's work overlaps Elasticsearch's and Elasticsearch uses more than one core.
        """
        if not self._ready:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
            self._recover()
            self._ready = True
        self._scan()
        batch = self._read_batch()
        # Oldest first, so offsets only ever move forward; all of them before a batch with
        # nothing to send (idle, or only blank and corrupt lines) is committed.
        while self._in_flight and (len(self._in_flight) >= self.config.in_flight or not batch.docs):
            previous, request = self._in_flight.popleft()
            request.join()
            self._deliver(previous, request.outcome)
            self._commit(previous)
        if batch.docs:
            self._in_flight.append((batch, self._send_async(batch)))
        elif batch.ends:
            self._commit(batch)  # blank or corrupt lines only, nothing in flight
        return len(batch.docs) + batch.corrupt or (1 if batch.ends else 0)

    def _rewind(self) -> None:
        """Forget the batch in flight: the next read starts at the acknowledged offsets."""
        while self._in_flight:
            self._in_flight.popleft()[1].join()
        for tracked in self.files.values():
            tracked.read_to = tracked.offset

    # -- registry ----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Load the registry; count what vanished or shrank unread while the shipper was away."""
        self.files.clear()
        try:
            with open(self.registry_path, encoding="utf-8") as handle:
                records = json.load(handle).get("files", [])
        except FileNotFoundError:
            records = []
        self._recovered = {(r["dev"], r["ino"]): r for r in records}
        present = {key for key, _, _ in self._listing()}
        for key, record in list(self._recovered.items()):
            if key not in present:
                self._lose(record["path"], record["size"] - record["offset"], "deleted before it was shipped")
                del self._recovered[key]

    def _save(self) -> None:
        body = {"version": 1, "files": [t.record() for t in self.files.values()]}
        tmp = self.registry_path.with_name(self.registry_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.registry_path)
        directory = os.open(self.registry_path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _lose(self, path: str, unread: int, why: str) -> None:
        if unread > 0:
            self.metrics["lost_bytes"].inc(unread)
            self.metrics["lost_files"].inc()
            log.warning("%s: %d bytes lost, %s", path, unread, why)

    # -- files -------------------------------------------------------------------------------

    def _listing(self) -> Iterator[tuple[tuple[int, int], str, os.stat_result]]:
        try:
            entries = list(os.scandir(self.config.events_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if not fnmatch(entry.name, PATTERN):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            if entry.is_file():
                yield (st.st_dev, st.st_ino), entry.path, st

    def _open(self, tracked: Tracked) -> bool:
        """Open the file of ``tracked``; False if it is gone or is no longer the same file."""
        try:
            fd = os.open(tracked.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != tracked.key:
            os.close(fd)
            return False
        tracked.fd = fd
        return True

    def _close(self, tracked: Tracked) -> None:
        if tracked.fd is not None:
            os.close(tracked.fd)
            tracked.fd = None

    def _adopt(self, key: tuple[int, int], path: str, st: os.stat_result) -> None:
        tracked = Tracked(key, path, size=st.st_size, mtime=st.st_mtime)
        if not self._open(tracked):
            return
        record = self._recovered.pop(key, None)
        if record is not None:
            same = st.st_size >= record["fp_len"] and fingerprint(tracked.fd, record["fp_len"]) == record["fp"]
            if not same:
                self._lose(record["path"], record["size"] - record["offset"], "its inode now holds another file")
            elif st.st_size < record["offset"]:
                self._lose(path, record["size"] - record["offset"], "truncated before it was shipped")
            else:
                tracked.offset = tracked.read_to = record["offset"]
        self._refresh_fingerprint(tracked)
        self.files[key] = tracked

    def _refresh_fingerprint(self, tracked: Tracked) -> None:
        if tracked.fp_len < FINGERPRINT_BYTES and tracked.size > tracked.fp_len and tracked.fd is not None:
            tracked.fp_len = min(tracked.size, FINGERPRINT_BYTES)
            tracked.fp = fingerprint(tracked.fd, tracked.fp_len)

    def _scan(self) -> None:
        """Follow renames, adopt new files, notice truncation and files rotated away."""
        seen = set()
        for key, path, st in self._listing():
            seen.add(key)
            tracked = self.files.get(key)
            if tracked is None:
                self._adopt(key, path, st)
                continue
            tracked.path, tracked.mtime, tracked.gone = path, st.st_mtime, False
            reopened = tracked.fd is None and st.st_size != tracked.size
            if reopened and (not self._open(tracked) or fingerprint(tracked.fd, tracked.fp_len) != tracked.fp):
                self._close(tracked)  # a new file on a reused inode: start it afresh
                del self.files[key]
                self._adopt(key, path, st)
                continue
            if st.st_size < tracked.offset:
                self._lose(path, tracked.size - tracked.offset, "truncated before it was shipped")
                tracked.offset, tracked.read_to, tracked.fp_len, tracked.fp = 0, 0, 0, ""
            tracked.size = st.st_size
            self._refresh_fingerprint(tracked)
        now = time.time()
        for key, tracked in list(self.files.items()):
            if key not in seen and tracked.fd is not None:
                tracked.gone = True  # rotated away: still readable through the open descriptor
                tracked.size = os.fstat(tracked.fd).st_size
            if tracked.offset < tracked.size:
                continue
            if key not in seen:
                self._close(tracked)  # read to the end and deleted: forget it
                del self.files[key]
            elif now - tracked.mtime > self.config.close_inactive:
                self._close(tracked)  # idle and read: reopened when it grows
        self.metrics["backlog_bytes"].set(sum(max(0, t.size - t.offset) for t in self.files.values()))

    # -- reading -----------------------------------------------------------------------------

    def _read_batch(self) -> Batch:
        batch = Batch()
        for tracked in sorted(self.files.values(), key=lambda t: (t.mtime, t.path)):
            if batch.full(self.config):
                break
            if tracked.read_to < tracked.size:
                if tracked.fd is None and not self._open(tracked):
                    continue
                self._read_file(tracked, batch)
        return batch

    def _read_file(self, tracked: Tracked, batch: Batch) -> None:
        position = tracked.read_to
        while not batch.full(self.config):
            chunk = os.pread(tracked.fd, READ_BYTES, position)
            end = chunk.rfind(b"\n")
            if end < 0:
                if len(chunk) == READ_BYTES:  # one line longer than READ_BYTES
                    skipped = self._skip_long_line(tracked, position, batch)
                    if skipped == position:
                        break  # not complete yet
                    position = batch.ends[tracked.key] = skipped
                    continue
                break  # empty, or a line still being written: leave it for later
            start = 0
            while start <= end and not batch.full(self.config):
                stop = chunk.index(b"\n", start)
                self._take(chunk[start:stop], tracked, position + start, batch)
                start = stop + 1
            position += start
            batch.ends[tracked.key] = position
            if start <= end:
                break  # batch full
        tracked.read_to = position

    def _skip_long_line(self, tracked: Tracked, position: int, batch: Batch) -> int:
        scan = position + READ_BYTES
        while True:
            chunk = os.pread(tracked.fd, READ_BYTES, scan)
            newline = chunk.find(b"\n")
            if newline >= 0:
                end = scan + newline + 1
                head = os.pread(tracked.fd, 200, position)
                reason = f"line of {end - position - 1} bytes, over {READ_BYTES}"
                self._dead(batch, "corrupt", reason, head, tracked, position)
                batch.corrupt += 1
                return end
            if len(chunk) < READ_BYTES:
                return position  # not complete yet
            scan += READ_BYTES

    def _take(self, line: bytes, tracked: Tracked, offset: int, batch: Batch) -> None:
        line = line.strip()
        if not line:
            return
        try:
            doc = json.loads(line, parse_constant=_reject_constant)
            if not isinstance(doc, dict):
                raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        except ValueError as exc:  # includes UnicodeDecodeError
            self._dead(batch, "corrupt", str(exc), line, tracked, offset)
            batch.corrupt += 1
            return
        event_id = doc.get("event.id")
        if not isinstance(event_id, str) or not event_id:
            event_id = hashlib.sha1(line).hexdigest()  # deterministic, so a resend is still a duplicate
        action = self._action_prefix + json.dumps(event_id).encode() + b"}}"
        batch.docs.append((action, line, tracked.path, offset))
        batch.timestamps.append(doc.get("@timestamp"))
        batch.size += len(line) + 100

    def _dead(self, batch: Batch, kind: str, reason: str, line: bytes, tracked_or_path, offset: int, **extra) -> None:
        path = tracked_or_path.path if isinstance(tracked_or_path, Tracked) else tracked_or_path
        batch.dead.append(
            {
                "@timestamp": _now_iso(),
                "kind": kind,
                "reason": reason,
                **extra,
                "file": path,
                "offset": offset,
                "line": line.decode("utf-8", "replace"),
            }
        )

    # -- delivery ----------------------------------------------------------------------------

    def _send(self, batch: Batch, pending: list[int]) -> tuple[list[dict], Exception | None]:
        """One bulk round: the result of each document sent (in order) and the request's error."""
        es = elasticsearch_module()
        from elasticsearch.helpers import streaming_bulk

        results: list[dict] = []
        try:
            for _, item in streaming_bulk(
                self.client,
                ((batch.docs[i][0], batch.docs[i][1]) for i in pending),
                chunk_size=self.config.batch_size,
                max_chunk_bytes=self.config.batch_bytes + (1 << 20),
                expand_action_callback=lambda pair: pair,
                raise_on_error=False,
                raise_on_exception=True,
                max_retries=0,
                filter_path="items.*.status,items.*.error",
            ):
                results.append(item["create"])
        except (es.ApiError, es.TransportError) as exc:
            return results, exc
        return results, None

    def _send_async(self, batch: Batch) -> "_Request":
        request = _Request(target=lambda: self._send(batch, list(range(len(batch.docs)))), daemon=True)
        request.start()
        return request

    def _deliver(self, batch: Batch, outcome: tuple[list[dict], Exception | None]) -> None:
        """Count the outcome of the first send; retry what failed until every document is
        indexed, a duplicate or rejected."""
        pending = list(range(len(batch.docs)))
        attempt = 0
        while True:
            results, error = outcome
            outcomes = {"documents_indexed": 0, "documents_duplicate": 0, "documents_rejected": 0}
            retry = [i for i, result in zip(pending, results) if not self._settle(batch, i, result, outcomes)]
            retry += pending[len(results):]
            for name, n in outcomes.items():
                self.metrics[name].inc(n)
            if not retry:
                return
            if error is not None and (advice := client_too_new(error)):
                log.error("bulk request refused: %s; %d documents wait for a retry", advice, len(retry))
            elif error is not None:
                log.warning("bulk request failed (%s); %d documents wait for a retry", error, len(retry))
            self.metrics["documents_retried"].inc(len(retry))
            self._scan()  # meanwhile, hold on to files rotated away and record what is waiting
            self._save()
            delay = min(self.config.max_backoff, self.config.initial_backoff * 2**attempt)
            attempt += 1
            if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                raise _Stopped
            pending = retry
            outcome = self._send(batch, pending)

    def _settle(self, batch: Batch, index: int, result: dict, outcomes: dict[str, int]) -> bool:
        """Count one document's result in ``outcomes``; False if it must be sent again."""
        status = result.get("status", 500)
        if 200 <= status < 300:
            outcomes["documents_indexed"] += 1
        elif status == DUPLICATE:
            outcomes["documents_duplicate"] += 1
        elif status in RETRIED_4XX or status >= 500:
            return False
        else:
            _, line, path, offset = batch.docs[index]
            error = result.get("error", {})
            self._dead(
                batch, "rejected", str(error.get("reason", error)), line, path, offset,
                status=status, error_type=error.get("type"),
            )  # fmt: skip
            outcomes["documents_rejected"] += 1
        return True

    def _commit(self, batch: Batch) -> None:
        """Dead letters first, then the offsets: a crash between the two repeats, never loses."""
        if batch.dead:
            with open(self.dead_letter_path, "a", encoding="utf-8") as handle:
                for entry in batch.dead:
                    handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self.metrics["documents_corrupt"].inc(batch.corrupt)
        for key, end in batch.ends.items():
            tracked = self.files[key]
            tracked.offset = end
            if tracked.gone and end >= tracked.size:
                self._close(tracked)  # rotated away and read to the end: forget it
                del self.files[key]
        for timestamp in reversed(batch.timestamps):
            epoch = _epoch(timestamp)
            if epoch is not None:
                self._last_event = epoch
                break
        self._save()
        self.metrics["backlog_bytes"].set(sum(max(0, t.size - t.offset) for t in self.files.values()))


# -- command line ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ShipperConfig(
            events_dir=Path(args.events_dir),
            namespace=args.namespace,
            state_dir=Path(args.state_dir) if args.state_dir else None,
            batch_size=args.batch_size,
            max_backoff=args.max_backoff,
        )
        shipper = Shipper(connect(args), config)
    except (SetupError, ValueError) as exc:
        print(f"modelmon ship: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, args.metrics_addr, registry=shipper.registry)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: shipper.stop())
    log.info("shipping %s/%s to %s", config.events_dir, PATTERN, config.data_stream)
    shipper.run()
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``ship`` subcommand of ``modelmon``."""
    p = commands.add_parser("ship", help="ship prediction event files to an Elasticsearch data stream")
    p.add_argument("events_dir", help="directory of predictions-<pid>.jsonl files")
    p.add_argument("--namespace", default="default", help="data stream logs-modelmon.predictions-<namespace>")
    p.add_argument("--state-dir", help="registry and dead letters (default: <events_dir>/.modelmon-shipper)")
    p.add_argument("--metrics-port", type=int, help="serve the shipper's Prometheus metrics on this port")
    p.add_argument("--metrics-addr", default="0.0.0.0", help="address for the metrics (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=2000, help="documents per bulk request")
    p.add_argument("--max-backoff", type=float, default=30.0, help="longest wait between retries, seconds")
    add_connection_arguments(p)
    p.set_defaults(run=run)
