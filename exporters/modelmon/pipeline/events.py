"""Prediction events: one JSON line per prediction, ECS fields, PII redacted.

Each process writes ``<directory>/predictions-<pid>.jsonl`` through a rotating file
handler (bounded: ``max_bytes`` times ``backup_count + 1`` per process), formatted by
python-json-logger. ``modelmon ship`` delivers the files to Elasticsearch. Or, where a
log collector reads container output (Filebeat, Elastic Agent on Kubernetes),
``EventLog.stdout()`` (``EventLog("-")``) writes the same lines to standard output.
Sampling keeps ``sample_rate`` of the ordinary rows and every failed or anomalous one.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import random
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pythonjsonlogger.json import JsonFormatter

ECS_VERSION = "8.11.0"
DATASET = "modelmon.predictions"
LOGGER = "modelmon.events"
MAX_KEYS = 500
MASK = "****"


@dataclass(frozen=True)
class Redaction:
    """What happens to named input or output fields before anything is written.

    ``drop`` removes the field, ``hash`` replaces it by a keyed hash (HMAC-SHA256 with
    ``key``, or ``MODELMON_REDACTION_KEY``), ``mask`` by ``****``; every string is cut to
    ``max_length`` characters.
    """

    drop: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()
    mask: frozenset[str] = frozenset()
    key: bytes | None = None
    max_length: int = 256

    def __post_init__(self) -> None:
        for name in ("drop", "hash", "mask"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        if self.key is None and os.environ.get("MODELMON_REDACTION_KEY"):
            object.__setattr__(self, "key", os.environ["MODELMON_REDACTION_KEY"].encode())
        if self.hash and not self.key:
            raise ValueError("Redaction: hashing fields needs a key (key= or MODELMON_REDACTION_KEY)")
        if self.max_length < 1:
            raise ValueError(f"Redaction: max_length must be positive, got {self.max_length}")

    def apply(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        items = fields.items() if len(fields) <= MAX_KEYS else list(fields.items())[:MAX_KEYS]
        limit = self.max_length
        if not (self.drop or self.mask or self.hash):
            return {str(name)[:limit]: json_safe(value, limit) for name, value in items}
        out: dict[str, Any] = {}
        for name, value in items:
            name = str(name)[:limit]
            if name in self.drop:
                continue
            if name in self.mask:
                value = MASK
            elif name in self.hash:
                value = "hmac:" + hmac.new(self.key, str(value).encode(), hashlib.sha256).hexdigest()[:32]
            out[name] = json_safe(value, limit)
        return out


def json_safe(value: Any, max_length: int) -> Any:
    """A value Elasticsearch accepts: finite numbers, cut strings, text for the rest."""
    t = type(value)
    if value is None or t is bool or t is int:
        return value
    if t is float:
        return value if math.isfinite(value) else str(value)
    if t is str:
        return value[:max_length]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return json_safe(value.item(), max_length)
        except (TypeError, ValueError):
            pass
    return str(value)[:max_length]


def parse_timestamp(stamp: object) -> datetime | None:
    """An event's ``@timestamp`` as an aware datetime (UTC if it names no zone), or None."""
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def add_prediction(event: dict[str, Any], value: Any) -> None:
    """The single output as a number (for histograms) or a label (for class shares)."""
    if type(value) in (int, float):
        event["modelmon.prediction.value"] = value
    elif type(value) is bool:
        event["modelmon.prediction.label"] = str(value)
    elif isinstance(value, str) and value not in ("nan", "inf", "-inf"):
        event["modelmon.prediction.label"] = value


class _EventFileHandler(RotatingFileHandler):
    """A rotating file handler that formats each event once and counts its failures.

    The standard ``shouldRollover`` formats every record a second time and stats the file
    to learn its size; this one keeps the size itself (the JSON is ASCII: characters are
    bytes) and rotates before a line would take the file past ``maxBytes``.
    """

    def __init__(self, path: Path, max_bytes: int, backup_count: int, on_error: Callable[[BaseException], None]):
        super().__init__(path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
        self._on_error = on_error
        self._size = os.fstat(self.stream.fileno()).st_size

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self._size and self._size + len(line) > self.maxBytes:
                self.doRollover()
                self._size = 0
            self.stream.write(line)
            self.stream.flush()
            self._size += len(line)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self._on_error(sys.exc_info()[1] or RuntimeError("event not written"))


class _EventStreamHandler(logging.Handler):
    """Events as lines on standard output: one write of a whole line per event, flushed.

    The handler's lock keeps threads from interleaving; processes sharing the output (gunicorn
    workers) do not interleave lines shorter than the pipe's atomic size (PIPE_BUF, 4096 bytes
    on Linux), each written with one system call. Failures are counted, never raised.
    """

    def __init__(self, stream: Any, on_error: Callable[[BaseException], None]):
        super().__init__()
        self._stream, self._on_error = stream, on_error

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8")
            stream = self._stream if self._stream is not None else sys.stdout
            target = getattr(stream, "buffer", None)
            if target is None:  # a text stream without bytes underneath (a test's StringIO)
                stream.write(data.decode("utf-8"))
                stream.flush()
                return
            stream.flush()  # whatever the service printed itself goes first, whole
            view = memoryview(data)
            while view:
                view = view[target.write(view) or len(view):]
            target.flush()
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self._on_error(sys.exc_info()[1] or RuntimeError("event not written"))


STDOUT = "-"


class EventLog:
    """Writes prediction events for one or more monitors of this process.

    ``directory`` gets one rotating file per process; ``"-"`` (or ``EventLog.stdout()``)
    writes the same lines to standard output instead, for a collector of container logs.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        sample_rate: float = 1.0,
        redaction: Redaction | None = None,
        labels: Mapping[str, str] | None = None,
        max_bytes: int = 50 * 1024 * 1024,
        backup_count: int = 5,
    ):
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate}")
        if max_bytes < 1024 or backup_count < 1:
            raise ValueError("max_bytes must be at least 1024 and backup_count at least 1")
        self.to_stdout = isinstance(directory, str) and directory == STDOUT
        self.directory = Path(directory)
        if not self.to_stdout:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self.redaction = redaction or Redaction()
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self._max_bytes, self._backup_count = max_bytes, backup_count
        self._random = random.Random()
        self._handler: logging.Handler | None = None
        self._pid = 0
        self.on_error: Callable[[BaseException], None] = lambda exc: None

    @classmethod
    def stdout(cls, **options: Any) -> "EventLog":
        """Events on standard output (the same ECS lines): ``EventLog.stdout(sample_rate=0.1)``."""
        return cls(STDOUT, **options)

    @property
    def path(self) -> Path | None:
        """This process's event file (None when writing to standard output)."""
        return None if self.to_stdout else self.directory / f"predictions-{os.getpid()}.jsonl"

    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def _writer(self) -> logging.Handler:
        """This process's handler, opened on first use and again after a fork."""
        if self._handler is None or self._pid != os.getpid():
            if self.to_stdout:
                handler = _EventStreamHandler(None, lambda e: self.on_error(e))
            else:
                handler = _EventFileHandler(self.path, self._max_bytes, self._backup_count,
                                            lambda e: self.on_error(e))
            handler.setFormatter(JsonFormatter("%(message)s", timestamp="@timestamp"))
            self._handler, self._pid = handler, os.getpid()
        return self._handler

    def write(
        self,
        *,
        model: str,
        version: str,
        reference: str,
        inputs: Mapping[str, Any] | None,
        outputs: Mapping[str, Any],
        flags: Mapping[str, Iterable[str]],
        nonfinite_prediction: bool,
        prediction_id: str | None = None,
        trace_id: str | None = None,
        duration: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Write one event (ECS keys at the top level, modelmon's under ``modelmon.``)."""
        redact = self.redaction.apply
        safe_outputs = redact(outputs)
        event: dict[str, Any] = {
            "message": "prediction failed" if error else "prediction",
            "log.level": "error" if error else "info",
            "ecs.version": ECS_VERSION,
            "service.name": model,
            "service.version": version,
            "event.kind": "event",
            "event.dataset": DATASET,
            "event.id": str(prediction_id) if prediction_id is not None else uuid.uuid4().hex,
            "event.outcome": "failure" if error else "success",
            "modelmon.model": model,
            "modelmon.version": version,
            "modelmon.reference": reference,
            "modelmon.inputs": redact(inputs) if isinstance(inputs, Mapping) else {},
            "modelmon.outputs": safe_outputs,
            "modelmon.anomalous": bool(nonfinite_prediction or any(flags.values())),
            "modelmon.flags.nonfinite_prediction": nonfinite_prediction,
        }
        for flag, names in flags.items():
            event[f"modelmon.flags.{flag}"] = list(names)
        if len(safe_outputs) == 1:
            ((name, value),) = safe_outputs.items()
            if name not in self.redaction.mask | self.redaction.hash:
                add_prediction(event, value)
        if duration is not None:
            event["event.duration"] = int(duration * 1e9)
        if trace_id is not None:
            event["trace.id"] = str(trace_id)
        if self.labels:
            event["labels"] = self.labels
        if error is not None:
            event["error.type"] = type(error).__name__
            event["error.message"] = str(error)[: self.redaction.max_length]
        # Straight to the handler: a Logger would only add a walk up the stack (findCaller).
        self._writer().handle(logging.LogRecord(LOGGER, logging.INFO, __file__, 0, event, None, None))

    def close(self) -> None:
        if self._handler is not None and self._pid == os.getpid():
            self._handler.close()
        self._handler = None

