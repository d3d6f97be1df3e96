"""Delayed labels over HTTP: ``POST /feedback`` with one label or a list of them.

Body: ``{"prediction_id": "p-1", "actual": 208500}`` or a list of such objects.
Answer: how many were joined to their prediction and how many were not.

The route listens on the model service's own port, so every request is bounded before
anything is parsed, and may need a bearer token. In this order:

- 401 ``missing or wrong bearer token`` (with ``WWW-Authenticate: Bearer``) when a token is
  configured and the ``Authorization: Bearer <token>`` header does not carry it;
- 415 when the ``Content-Type`` is not JSON (``application/json`` or ``...+json``);
- 413 when ``Content-Length`` is over ``max_bytes``, without reading the body; a body
  without ``Content-Length`` (chunked) is read up to ``max_bytes`` and refused past it;
- 400 for a body that is not JSON, or labels that are not ``{"prediction_id": id,
  "actual": scalar}`` within the length bounds; 413 for more than ``max_labels`` labels.

Every refusal answers ``{"error": "..."}`` and is counted in
``modelmon_internal_errors_total{stage="feedback"}``. A request is taken whole or not at
all: one bad label refuses the request.

The token: ``token=`` (a string) or ``token_file=`` (a path) if given, else the
environment's ``MODELMON_FEEDBACK_TOKEN``, else the file named by
``MODELMON_FEEDBACK_TOKEN_FILE``; none of them: no authentication. A token that is
configured but empty, unreadable or not printable ASCII fails at start-up with
``FeedbackConfigError``; it never opens the route silently. Tokens are never logged.
"""
from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

TOKEN_ENV = "MODELMON_FEEDBACK_TOKEN"
TOKEN_FILE_ENV = "MODELMON_FEEDBACK_TOKEN_FILE"
STAGE = "feedback"  # of modelmon_internal_errors_total

DEFAULT_MAX_BYTES = 1024 * 1024
MAX_LABELS_PER_REQUEST = 10_000
MAX_ID_LENGTH = 256
MAX_LABEL_LENGTH = 256
READ_CHUNK = 64 * 1024
JSON_ERROR = {"Content-Type": "application/json"}


class FeedbackConfigError(ValueError):
    """The feedback route's configuration is unusable (raised at start-up)."""


@dataclass(frozen=True)
class FeedbackLimits:
    """Bounds of one feedback request."""

    max_bytes: int = DEFAULT_MAX_BYTES  # request body
    max_labels: int = MAX_LABELS_PER_REQUEST
    max_id_length: int = MAX_ID_LENGTH  # characters of a prediction id
    max_label_length: int = MAX_LABEL_LENGTH  # characters of a string label

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_labels", "max_id_length", "max_label_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FeedbackConfigError(f"FeedbackLimits.{name} must be a positive integer, got {value!r}")


class Refused(Exception):
    """A feedback request refused with an HTTP status and a JSON error."""

    def __init__(self, status: int, error: str, headers: Mapping[str, str] | None = None):
        super().__init__(error)
        self.status, self.error = status, error
        self.headers = {**JSON_ERROR, **(headers or {})}

    @property
    def answer(self) -> dict[str, str]:
        return {"error": self.error}


def _valid_token(token: str, source: str) -> str:
    if not token:
        raise FeedbackConfigError(f"the feedback token from {source} is empty")
    if not all("!" <= ch <= "~" for ch in token):
        raise FeedbackConfigError(f"the feedback token from {source} must be printable ASCII without spaces")
    return token


def _token_from_file(path: str | os.PathLike, source: str) -> str:
    try:
        text = open(path, encoding="ascii").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise FeedbackConfigError(f"cannot read the feedback token file {os.fspath(path)!r} ({source}): "
                                  f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}") from None
    return _valid_token(text.strip(), f"file {os.fspath(path)!r} ({source})")


def resolve_token(token: str | None = None, token_file: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token the route requires, or None for no authentication.

    Precedence: ``token``, ``token_file``, ``$MODELMON_FEEDBACK_TOKEN``,
    ``$MODELMON_FEEDBACK_TOKEN_FILE``. Giving both of a pair (both arguments, or both
    variables) is an error, and so is an empty or unreadable token.
    """
    environ = os.environ if environ is None else environ
    if token is not None and token_file is not None:
        raise FeedbackConfigError("give token or token_file, not both")
    if token is not None:
        return _valid_token(token, "the token argument")
    if token_file is not None:
        return _token_from_file(token_file, "the token_file argument")
    if TOKEN_ENV in environ and TOKEN_FILE_ENV in environ:
        raise FeedbackConfigError(f"set {TOKEN_ENV} or {TOKEN_FILE_ENV}, not both")
    if TOKEN_ENV in environ:
        return _valid_token(environ[TOKEN_ENV], TOKEN_ENV)
    if TOKEN_FILE_ENV in environ:
        return _token_from_file(environ[TOKEN_FILE_ENV], TOKEN_FILE_ENV)
    return None


def check_token(expected: str | None, authorization: str | None) -> None:
    """Raise Refused(401) unless ``authorization`` is ``Bearer <expected>`` (constant time)."""
    if expected is None:
        return
    scheme, _, given = (authorization or "").strip().partition(" ")
    ok = hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected.encode("ascii"))
    if scheme.lower() != "bearer" or not ok:
        raise Refused(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="modelmon feedback"'})


def check_content_type(content_type: str | None) -> None:
    """Raise Refused(415) unless the media type is JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise Refused(415, f"Content-Type must be application/json, got {media or 'none'!r}")


def parse_content_length(value: str | None, max_bytes: int) -> int | None:
    """The declared body length, or None if absent; Refused(413 or 400) past the cap or malformed."""
    if value is None or value == "":
        return None
    if not value.strip().isdigit():
        raise Refused(400, f"malformed Content-Length {value[:40]!r}")
    length = int(value)
    if length > max_bytes:
        raise Refused(413, f"request body of {length} bytes, over the limit of {max_bytes} bytes")
    return length


def too_large(max_bytes: int) -> Refused:
    return Refused(413, f"request body over the limit of {max_bytes} bytes")


def read_capped(read: Callable[[int], bytes], content_length: int | None, max_bytes: int) -> bytes:
    """Read a body from ``read(n)`` (a file's read), never more than ``max_bytes + 1`` bytes.

    ``content_length`` (already checked against the cap) bounds the read; without it (a
    chunked body) the stream is read to its end or refused past the cap.
    """
    body = bytearray()
    want = max_bytes + 1 if content_length is None else content_length
    while len(body) < want:
        chunk = read(min(READ_CHUNK, want - len(body)))
        if not chunk:
            break
        body += chunk
    if len(body) > max_bytes:
        raise too_large(max_bytes)
    return bytes(body)


def parse_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Refused(400, f"body is not JSON: {str(exc)[:100]}") from None


SHAPE = 'expected {"prediction_id": ..., "actual": ...} or a list of them'


def validate_labels(body: Any, limits: FeedbackLimits) -> list[tuple[str, Any]]:
    """(prediction id, label) pairs of a parsed body; Refused(400 or 413) if any label is unusable."""
    labels = body if isinstance(body, list) else [body]
    if len(labels) > limits.max_labels:
        raise Refused(413, f"{len(labels)} labels, over the limit of {limits.max_labels} per request")
    pairs = []
    for i, label in enumerate(labels):
        where = f"label {i}: " if isinstance(body, list) else ""
        if not isinstance(label, dict) or "prediction_id" not in label or "actual" not in label:
            raise Refused(400, where + SHAPE)
        pid, actual = label["prediction_id"], label["actual"]
        if isinstance(pid, bool) or not isinstance(pid, (str, int)):
            raise Refused(400, f"{where}prediction_id must be a string or an integer")
        pid = str(pid)
        if not 0 < len(pid) <= limits.max_id_length:
            raise Refused(400, f"{where}prediction_id must have 1 to {limits.max_id_length} characters, has {len(pid)}")
        if actual is not None and not isinstance(actual, (str, int, float)):
            raise Refused(400, f"{where}actual must be a number, a string, a boolean or null")
        if isinstance(actual, str) and len(actual) > limits.max_label_length:
            raise Refused(400, f"{where}actual must have at most {limits.max_label_length} characters, has {len(actual)}")
        pairs.append((pid, actual))
    return pairs


def count_refusal(monitor: Any, refused: Refused) -> None:
    """Count a refusal in modelmon_internal_errors_total{stage="feedback"} (logged once a minute at most)."""
    errors = getattr(monitor, "_errors", None)
    if errors is not None:
        errors.count(STAGE, f"feedback request refused with {refused.status}: {refused.error}")


def join(monitor: Any, pairs: list[tuple[str, Any]]) -> dict[str, int]:
    joined = sum(bool(monitor.record_outcome(pid, actual)) for pid, actual in pairs)
    return {"joined": joined, "unmatched": len(pairs) - joined}


def record_labels(monitor: Any, body: Any, *, limits: FeedbackLimits | None = None) -> tuple[int, dict[str, Any]]:
    """Join the labels of a parsed request body; returns (HTTP status, JSON answer).

    For your own route in a framework modelmon does not integrate: the same bounds as
    ``/feedback`` on the labels, but the body size is yours to bound before parsing (or
    use ``record_label_bytes``).
    """
    try:
        pairs = validate_labels(body, limits or FeedbackLimits())
    except Refused as refused:
        count_refusal(monitor, refused)
        return refused.status, refused.answer
    return 200, join(monitor, pairs)


def record_label_bytes(monitor: Any, raw: bytes, *, limits: FeedbackLimits | None = None) -> tuple[int, dict[str, Any]]:
    """``record_labels`` for a raw JSON body, refused (413) over ``limits.max_bytes`` before parsing."""
    limits = limits or FeedbackLimits()
    try:
        if len(raw) > limits.max_bytes:
            raise too_large(limits.max_bytes)
        body = parse_body(raw)
    except Refused as refused:
        count_refusal(monitor, refused)
        return refused.status, refused.answer
    return record_labels(monitor, body, limits=limits)


class FeedbackEndpoint:
    """The framework-neutral route: configured once at start-up, then per request
    ``precheck`` (headers), read the body with the cap, ``finish`` (the raw body)."""

    def __init__(self, monitor: Any, *, token: str | None = None, token_file: str | os.PathLike | None = None,
                 limits: FeedbackLimits | None = None, max_bytes: int | None = None):
        self.monitor = monitor
        self.token = resolve_token(token, token_file)
        limits = limits or FeedbackLimits()
        if max_bytes is not None:
            limits = FeedbackLimits(max_bytes, limits.max_labels, limits.max_id_length, limits.max_label_length)
        self.limits = limits

    @property
    def max_bytes(self) -> int:
        return self.limits.max_bytes

    def precheck(self, authorization: str | None, content_type: str | None, content_length: str | None) -> int | None:
        """Token, media type and declared length; returns the length (None: not declared)."""
        check_token(self.token, authorization)
        check_content_type(content_type)
        return parse_content_length(content_length, self.limits.max_bytes)

    def finish(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        if len(raw) > self.limits.max_bytes:
            raise too_large(self.limits.max_bytes)
        return 200, join(self.monitor, validate_labels(parse_body(raw), self.limits))

    def refused(self, refused: Refused) -> tuple[int, dict[str, Any], dict[str, str]]:
        count_refusal(self.monitor, refused)
        return refused.status, refused.answer, refused.headers

    def handle(self, headers: Mapping[str, str], read: Callable[[int], bytes]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A whole synchronous request: ``headers`` looked up case-insensitively by the
        framework, ``read(n)`` the body stream. Returns (status, JSON answer, headers)."""
        try:
            length = self.precheck(headers.get("Authorization"), headers.get("Content-Type"),
                                   headers.get("Content-Length"))
            status, answer = self.finish(read_capped(read, length, self.limits.max_bytes))
            return status, answer, dict(JSON_ERROR)
        except Refused as refused:
            return self.refused(refused)
