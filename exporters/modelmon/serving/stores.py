"""Choosing where predictions wait for their delayed label, from an object or a URL.

``ModelMonitor(..., outcomes=...)`` and the demo's ``MODELMON_OUTCOMES`` take:

- nothing: the process-wide in-memory store (one process);
- an ``OutcomeStore`` or ``RedisOutcomeStore`` object, used as it is;
- a path, or ``sqlite:///absolute/path`` (``sqlite://relative/path``): a SQLite file,
  shared by the workers and replicas of one host;
- ``redis://host:6379/0``, ``rediss://...`` or ``unix:///path.sock``: Redis, shared by
  replicas on any host (modelmon.redis_store).

Monitors given the same URL or path share one store (one writer thread, one
connection pool). A URL no store can use raises ValueError here, at start-up, naming
the URL without its password.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Union

from .outcomes import OutcomeStore, default_store
from .redis_store import SCHEMES as REDIS_SCHEMES, RedisOutcomeStore, redacted

Store = Union[OutcomeStore, RedisOutcomeStore]
_opened: dict[str, Any] = {}
_lock = threading.Lock()


def open_store(spec: Any = None) -> Any:
    """The outcome store ``spec`` names (see the module's doc)."""
    if spec is None:
        return default_store()
    if hasattr(spec, "remember") and hasattr(spec, "take"):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"outcomes must be an outcome store, a path or a URL, got {type(spec).__name__}")
    text = os.fspath(spec)
    if not text.strip():
        raise ValueError("outcomes: empty path or URL (expected a path, sqlite:///path or redis://host:6379/0)")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in REDIS_SCHEMES:
        key = text
    elif scheme == "sqlite":
        path = text.split("://", 1)[1]
        if not path or path.startswith("?"):
            raise ValueError(f"outcomes {redacted(text)}: sqlite URLs name a file: sqlite:///var/lib/modelmon/o.sqlite")
        key = str(Path(path).resolve())
    elif scheme:
        raise ValueError(f"outcomes {redacted(text)}: unknown scheme {scheme!r}; expected a path, "
                         "sqlite:///path, redis://host:6379/0, rediss://host:6380/0 or unix:///path.sock")
    else:
        key = str(Path(text).resolve())
    with _lock:
        store = _opened.get(key)
        if store is None:
            store = RedisOutcomeStore(text) if scheme in REDIS_SCHEMES else OutcomeStore(key)
            _opened[key] = store
    return store
