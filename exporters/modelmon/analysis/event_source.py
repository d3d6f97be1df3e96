"""Reading logged prediction events back: from the event files or from Elasticsearch.

Both sources yield the events as the monitor wrote them: a dict with dotted keys at the
top level (``"event.id"``, ``"modelmon.inputs"``, ...). Documents that Elasticsearch
returns with nested objects instead (``{"modelmon": {"inputs": ...}}``) are flattened to
the same shape. The ``elasticsearch`` package is imported only for an Elasticsearch source.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..pipeline.events import DATASET, MASK, parse_timestamp

try:  # 3-4x faster than json on event lines; optional (pip install 'modelmon[report]')
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover
    _fast_loads = None

DATA_STREAMS = f"logs-{DATASET}-*"
# Mappings of their own: flattening stops at these keys.
LEAF_MAPPINGS = ("modelmon.inputs", "modelmon.outputs", "labels")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SourceError(ValueError):
    """An event source that cannot be read: names the source and the problem."""


class Redacted:
    """A logged value that was masked or hashed: present, but not comparable."""

    def __repr__(self) -> str:
        return "<redacted>"


REDACTED = Redacted()


def add_source_arguments(parser: Any) -> None:
    """Flags shared by the commands that read events."""
    parser.add_argument("--since", help="only events newer than this: a duration (24h, 30m, 7d) or an ISO 8601 time")
    parser.add_argument("--es-index", default=DATA_STREAMS,
                        help=f"Elasticsearch data streams to read (default {DATA_STREAMS}); credentials from "
                             "$ELASTICSEARCH_API_KEY or $ELASTICSEARCH_USERNAME/_PASSWORD")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``24h``, ``30m``, ``7d``, ``2w`` before now, or an ISO 8601 time; None for None."""
    if text is None:
        return None
    now = now or datetime.now(timezone.utc)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"--since: expected a duration like 24h or an ISO 8601 time, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def event_time(event: Mapping[str, Any]) -> datetime | None:
    return parse_timestamp(event.get("@timestamp"))


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects to dotted top-level keys, keeping inputs, outputs and labels whole."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        name = prefix + str(key)
        if isinstance(value, Mapping) and name not in LEAF_MAPPINGS:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def field_value(event: Mapping[str, Any], path: str) -> Any:
    """A field of an event: a top-level key (``event.id``), a key inside one of its
    mappings (``labels.region``, ``modelmon.inputs.city``), or else an input feature."""
    if path in event:
        return event[path]
    for mapping in LEAF_MAPPINGS:
        if path.startswith(mapping + "."):
            inner = event.get(mapping)
            return inner.get(path[len(mapping) + 1:]) if isinstance(inner, Mapping) else None
    inputs = event.get("modelmon.inputs")
    return inputs.get(path) if isinstance(inputs, Mapping) else None


def logged_value(value: Any) -> Any:
    """A logged input or output as the service saw it: "nan"/"inf" back to floats,
    masked or hashed values to ``REDACTED``; everything else unchanged."""
    if isinstance(value, str):
        if value == "nan":
            return math.nan
        if value in ("inf", "-inf"):
            return float(value)
        if value == MASK or value.startswith("hmac:"):
            return REDACTED
    return value


def json_ready(value: Any) -> Any:
    """Nested dicts and lists with non-finite floats as "nan"/"inf"/"-inf", as the event log writes them."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass
class EventStats:
    """What reading a source skipped, for the report's notes."""

    read: int = 0
    malformed: int = 0
    before_since: int = 0
    bytes_total: int = 0  # of the event files to read (0: unknown, as for Elasticsearch)
    bytes_read: int = 0


def event_files(path: Path) -> list[Path]:
    """The event files of a directory (``predictions-<pid>.jsonl[.N]``), oldest rotation first."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"{path}: no such event file or directory")
    files = list(path.glob("predictions-*.jsonl")) + list(path.glob("predictions-*.jsonl.*"))

    def order(p: Path) -> tuple[str, int]:
        stem, _, suffix = p.name.partition(".jsonl")
        return stem, -int(suffix[1:]) if suffix[1:].isdigit() else 0

    return sorted(files, key=order)


def parse_line(line: bytes) -> Any:
    """One event line: orjson when installed, json for what orjson refuses (NaN, huge integers)."""
    if _fast_loads is not None:
        try:
            return _fast_loads(line)
        except ValueError:
            pass
    return json.loads(line)


def source_files(path: Path) -> list[Path]:
    """``event_files``, and an error for a directory without any."""
    files = event_files(path)
    if not files:
        raise SourceError(f"{path}: no event files (predictions-*.jsonl) in this directory")
    return files


def read_files(path: Path, since: datetime | None, stats: EventStats) -> Iterator[dict[str, Any]]:
    return read_file_list(source_files(path), since, stats)


def read_file_list(files: list[Path], since: datetime | None, stats: EventStats) -> Iterator[dict[str, Any]]:
    """The events of these event files, in order."""
    stats.bytes_total = sum(f.stat().st_size for f in files)
    for file in files:
        with open(file, "rb") as handle:
            for line in handle:
                stats.bytes_read += len(line)
                try:
                    event = parse_line(line)
                except ValueError:  # UnicodeDecodeError too
                    stats.malformed += 1
                    continue
                if not isinstance(event, dict):
                    stats.malformed += 1
                    continue
                if since is not None and (event_time(event) or since) < since:
                    stats.before_since += 1
                    continue
                stats.read += 1
                yield event


def elasticsearch_client(url: str, serializer: Any = None) -> Any:
    """A client for ``url``, authenticated from $ELASTICSEARCH_API_KEY or
    $ELASTICSEARCH_USERNAME/_PASSWORD, CA bundle from $ELASTICSEARCH_CA_CERTS;
    ``serializer``: an elastic_transport serializer for its JSON responses."""
    try:
        from elasticsearch import Elasticsearch
    except ImportError:
        raise SourceError("reading Elasticsearch needs the elasticsearch package: "
                          "pip install 'modelmon[elastic]'") from None
    env = os.environ.get
    auth: dict[str, Any] = {}
    if env("ELASTICSEARCH_API_KEY"):
        auth["api_key"] = env("ELASTICSEARCH_API_KEY")
    elif env("ELASTICSEARCH_USERNAME"):
        auth["basic_auth"] = (env("ELASTICSEARCH_USERNAME"), env("ELASTICSEARCH_PASSWORD", ""))
    if serializer is not None:
        auth["serializers"] = {"application/json": serializer, "application/vnd.elasticsearch+json": serializer}
    return Elasticsearch(url, ca_certs=env("ELASTICSEARCH_CA_CERTS"), request_timeout=60, **auth)


def _hits_serializer(fields: list[str] | None) -> Any:
    """A JSON serializer that decodes search responses with msgspec straight into events:
    of each hit only ``sort`` and the ``fields`` of its ``_source`` (all of it for None)
    become Python objects, the rest is skipped unparsed. That is cheaper than asking
    Elasticsearch to filter: its source filtering and ``filter_path`` took 3-5 times the
    node's CPU of sending whole hits. Other responses (point in time, errors) decode as JSON."""
    try:
        import msgspec
        from elastic_transport import JsonSerializer
    except ImportError:
        raise SourceError("reading Elasticsearch needs the msgspec package: pip install 'modelmon[elastic]'") from None

    if fields is None:
        source: Any = dict[str, Any]
        names: list[str] = []
    else:  # the fields, and each dotted prefix of them ("modelmon" of "modelmon.inputs"): nested documents
        prefixes = [".".join(f.split(".")[:i]) for f in fields for i in range(1, f.count(".") + 1)]
        names = list(dict.fromkeys([*fields, *prefixes]))
        source = msgspec.defstruct("Source", [(f"f{i}", Any, msgspec.UNSET) for i in range(len(names))],
                                   rename={f"f{i}": name for i, name in enumerate(names)})
    hit = msgspec.defstruct("Hit", [("source", source, msgspec.UNSET), ("sort", list, msgspec.UNSET)],
                            rename={"source": "_source"})
    hits = msgspec.defstruct("Hits", [("hits", list[hit], [])])
    decode = msgspec.json.Decoder(msgspec.defstruct("Page", [("hits", hits, msgspec.UNSET)])).decode
    nested = set(names) - set(fields or ())
    unset, astuple = msgspec.UNSET, msgspec.structs.astuple

    def event(source: Any) -> dict[str, Any]:
        if source is unset:
            return {}
        if fields is None:
            return flatten(source)
        found = {name: value for name, value in zip(names, astuple(source)) if value is not unset}
        return flatten(found) if nested.intersection(found) else found

    class HitsSerializer(JsonSerializer):
        def json_loads(self, data: bytes) -> Any:
            page = decode(data)
            if page.hits is unset:
                return super().json_loads(data)
            return {"events": [event(h.source) for h in page.hits.hits],
                    "search_after": page.hits.hits[-1].sort if page.hits.hits else None}

    return HitsSerializer()


ES_PAGE = 2000  # hits a request (a page of 1.2 KB events is about 10 MB as Python objects)
ES_SLICES = 4  # parallel slices of the point in time
ES_KEEP_ALIVE = "5m"


def _read_slice(client: Any, pit: str, query: dict[str, Any], slice_id: int, slices: int, out: Any,
                stop: Any) -> None:
    """One slice of the point in time, page by page (search_after on _shard_doc), into ``out``."""
    search_after = None
    try:
        while not stop.is_set():
            body: dict[str, Any] = {"pit": {"id": pit, "keep_alive": ES_KEEP_ALIVE}, "size": ES_PAGE,
                                    "sort": ["_shard_doc"], "query": query, "track_total_hits": False}
            if slices > 1:
                body["slice"] = {"id": slice_id, "max": slices}
            if search_after is not None:
                body["search_after"] = search_after
            page = client.search(**body).body  # decoded by _hits_serializer
            if not page["events"]:
                break
            out.put(page["events"])
            search_after = page["search_after"]
            if len(page["events"]) < ES_PAGE:
                break
        out.put(None)
    except BaseException as exc:  # handed to the reader, which raises it
        out.put(exc)


def _unreadable(url: str, index: str, exc: Exception) -> SourceError:
    from ..pipeline.elk_setup import client_too_new  # an 8.x server refuses the client 9: say what to install

    return SourceError(f"{url}: cannot read {index}: {client_too_new(exc) or exc}")


def _open_pit(client: Any, index: str) -> str | None:
    """A point in time over ``index`` (None: no such data stream)."""
    from elasticsearch import NotFoundError

    try:
        return client.open_point_in_time(index=index, keep_alive=ES_KEEP_ALIVE, ignore_unavailable=True)["id"]
    except NotFoundError:
        return None


def _close_pit(client: Any, pit: str) -> None:
    """Close a point in time; one that is gone or expired expires on its own."""
    from elasticsearch import ApiError, TransportError

    try:
        client.close_point_in_time(id=pit)
    except (ApiError, TransportError):
        pass


def open_point_in_time(url: str, index: str) -> str | None:
    """A point in time over ``index`` for readers in other processes (None: no such data
    stream); close it with ``close_point_in_time``."""
    from elasticsearch import ApiError, TransportError

    client = elasticsearch_client(url)
    try:
        return _open_pit(client, index)
    except (ApiError, TransportError) as exc:
        raise _unreadable(url, index, exc) from exc
    finally:
        client.close()


def close_point_in_time(url: str, pit: str) -> None:
    client = elasticsearch_client(url)
    try:
        _close_pit(client, pit)
    finally:
        client.close()


def read_elasticsearch(url: str, since: datetime | None, stats: EventStats,
                       index: str = DATA_STREAMS, slices: int | None = None,
                       fields: list[str] | None = None, *, pit: str | None = None,
                       slice_ids: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Every event of the prediction data streams, in no particular order: a point in time
    read in ``slices`` parallel slices, each paged with search_after, at most a few pages
    held at a time. Given ``pit`` (another process's, left open) and ``slice_ids``, only
    those slices of it."""
    import queue
    import threading

    from elasticsearch import ApiError, TransportError

    slices = slices or ES_SLICES
    slice_ids = list(range(slices)) if slice_ids is None else slice_ids
    own_pit = pit is None

    query: dict[str, Any] = {"match_all": {}}
    if since is not None:
        query = {"range": {"@timestamp": {"gte": since.isoformat()}}}
    client = elasticsearch_client(url, _hits_serializer(fields))
    stop = threading.Event()
    pages: queue.Queue = queue.Queue(maxsize=len(slice_ids))  # with one page in flight a slice: 2 x slices held
    threads: list[threading.Thread] = []
    try:
        if own_pit:
            pit = _open_pit(client, index)
            if pit is None:
                return
        threads = [threading.Thread(target=_read_slice,
                                    args=(client, pit, query, i, slices, pages, stop),
                                    daemon=True, name=f"modelmon-es-slice-{i}") for i in slice_ids]
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            page = pages.get()
            if page is None:
                running -= 1
                continue
            if isinstance(page, BaseException):
                raise page
            stats.read += len(page)
            yield from page
    except (ApiError, TransportError) as exc:
        raise _unreadable(url, index, exc) from exc
    finally:
        stop.set()
        for thread in threads:  # let them finish their request; drain so none blocks on a full queue
            while thread.is_alive():
                try:
                    pages.get(timeout=0.1)
                except queue.Empty:
                    pass
        if own_pit and pit is not None:
            _close_pit(client, pit)
        client.close()


def read_events(source: str, *, since: datetime | None = None, stats: EventStats | None = None,
                index: str = DATA_STREAMS, fields: list[str] | None = None,
                slices: int | None = None) -> Iterator[dict[str, Any]]:
    """Events from an event file, a directory of them, or an Elasticsearch URL (``index``:
    the data streams to read there; ``fields``: only these of each event's source, there
    (of a document with nested objects, the whole objects that hold them);
    ``slices``: parallel slices, default ``ES_SLICES``)."""
    stats = stats if stats is not None else EventStats()
    if is_url(source):
        return read_elasticsearch(source, since, stats, index, slices, fields=fields)
    return read_files(Path(source), since, stats)
