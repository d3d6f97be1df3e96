"""Folding events in worker processes: ``modelmon report --jobs N``.

One interpreter reads and folds 50,000-65,000 events per CPU second, threads or not (the
GIL). With ``--jobs N``, N processes ('spawn' start: no thread's lock is inherited) each
read a share of the source, a run of the event files or some slices of one Elasticsearch
point in time, and fold it into a ``Live`` of their own; the parent merges them:

- bin counts, redacted values, finite values per segment, events and versions add up;
- segments are matched by name. A worker keeps apart the first ``max_segments`` it meets,
  as one process does; the merge keeps the ``max_segments`` with the most rows over all
  workers (ties: the first met) and counts the rest as ``OTHER_SEGMENT``, with the rows
  the workers lumped themselves. With no more segments than the cap, nothing is lumped;
- the samples merge into one uniform sample of all rows: worker i's sample is uniform over
  its ``offered`` rows, so the number taken from each is drawn from a multivariate
  hypergeometric of the ``offered`` counts, then that many rows uniformly from its sample
  (a fixed seed: the same report each run). When the sample holds every row, it holds
  them all, in the order of the shares.
"""
from __future__ import annotations

import gc
import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .event_source import (
    EventStats,
    close_point_in_time,
    is_url,
    open_point_in_time,
    read_elasticsearch,
    read_file_list,
    source_files,
)
from .live import OTHER_SEGMENT, SAMPLE_SEED, Live
from ..serving.reference import Reference


@dataclass(frozen=True)
class Share:
    """What one worker reads: some event files, or some slices of a point in time."""

    since: datetime | None
    files: tuple[Path, ...] = ()
    url: str = ""
    pit: str = ""
    slice_ids: tuple[int, ...] = ()
    slices: int = 1
    index: str = ""
    fields: tuple[str, ...] | None = None

    def events(self, stats: EventStats) -> Iterator[dict[str, Any]]:
        if not self.url:
            return read_file_list(list(self.files), self.since, stats)
        return read_elasticsearch(self.url, self.since, stats, self.index, self.slices,
                                  None if self.fields is None else list(self.fields),
                                  pit=self.pit, slice_ids=list(self.slice_ids))


@contextmanager
def shares(source: str, jobs: int, *, since: datetime | None, index: str, fields: list[str] | None,
           slices: int) -> Iterator[list[Share]]:
    """At most ``jobs`` shares of ``source``: runs of its event files (balanced by count), or
    slices of a point in time over ``index``, open while in the ``with`` block."""
    if not is_url(source):
        files = source_files(Path(source))
        n = min(jobs, len(files))
        bounds = [len(files) * i // n for i in range(n + 1)]
        yield [Share(since, files=tuple(files[a:b])) for a, b in zip(bounds, bounds[1:])]
        return
    pit = open_point_in_time(source, index)
    if pit is None:
        yield []
        return
    try:
        yield [Share(since, url=source, pit=pit, slice_ids=tuple(range(i, slices, jobs)), slices=slices,
                     index=index, fields=None if fields is None else tuple(fields))
               for i in range(min(jobs, slices))]
    finally:
        close_point_in_time(source, pit)


def fold_share(reference: Reference, group_field: str, share: Share, seed: int,
               options: dict[str, Any]) -> tuple[Live, EventStats]:
    """A worker: fold one share into a partial ``Live`` (its sample cut to the rows kept)."""
    stats = EventStats()
    live = Live(reference, group_field, seed=seed, **options)
    gc.freeze()  # what exists now outlives the read: out of the collector's full passes
    try:
        live.add_all(share.events(stats))
    finally:
        gc.unfreeze()
    live.sample, live.sample_groups = live.sample[: live.sampled_rows], live.sample_groups[: live.sampled_rows]
    return live, stats


def fold_in_processes(reference: Reference, group_field: str, parts: list[Share],
                      options: dict[str, Any]) -> tuple[Live, EventStats]:
    """Fold each share in a process of its own (one share: in this one) and merge the partials.
    A worker's exception is raised here, as it was raised there."""
    tasks = [(reference, group_field, share, SAMPLE_SEED + i, options) for i, share in enumerate(parts)]
    if len(tasks) <= 1:
        results = [fold_share(*tasks[0])] if tasks else [(Live(reference, group_field, **options), EventStats())]
    else:
        # a worker that cannot start (a script read from stdin, which 'spawn' cannot re-import)
        # breaks the pool, raised here: a multiprocessing.Pool would restart it forever
        try:
            with ProcessPoolExecutor(len(tasks), mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(fold_share, *zip(*tasks)))
        except BrokenProcessPool:
            raise ValueError(f"--jobs {len(tasks)}: a worker process died or could not start (a script read from "
                             "stdin, or one calling modelmon without `if __name__ == '__main__':`, cannot start "
                             "'spawn' workers); run it from a file with that guard, or use --jobs 1") from None
    stats = EventStats()
    for _, part in results:
        stats.read, stats.malformed = stats.read + part.read, stats.malformed + part.malformed
        stats.before_since += part.before_since
    return merge([live for live, _ in results]), stats


def _segments(parts: list[Live], cap: int) -> tuple[list[str], list[np.ndarray]]:
    """The merged segments, and per part the new code of each of its codes (with -1 at the
    end, so that code -1, no segment, stays -1)."""
    rows: Counter = Counter()
    for part in parts:
        for name, n in zip(part.segments, part.segment_rows):
            rows[name] += n
    named = [name for name in rows if name != OTHER_SEGMENT]  # in the order first met
    kept = set(sorted(named, key=lambda name: -rows[name])[:cap])
    segments = [name for name in named if name in kept]
    if len(kept) < len(named) or OTHER_SEGMENT in rows:
        segments.append(OTHER_SEGMENT)
    code = {name: i for i, name in enumerate(segments)}
    other = code.get(OTHER_SEGMENT, -1)
    return segments, [np.array([code.get(name, other) for name in part.segments] + [-1], np.intp) for part in parts]


def merge(parts: list[Live], seed: int = SAMPLE_SEED) -> Live:
    """One ``Live`` of the partials' rows, as the module's docstring describes."""
    first = parts[0]
    live = Live(first.reference, first.group_field, sample_size=first.sample_size, max_segments=first.max_segments,
                chunk=first.chunk)
    segments, codes = _segments(parts, first.max_segments)
    live.segments, live._codes = segments, {None: -1, **{name: i for i, name in enumerate(segments)}}
    live.segment_rows = [0] * len(segments)
    for part, new in zip(parts, codes):
        live.events, live.other_models = live.events + part.events, live.other_models + part.other_models
        live.failed += part.failed
        live.versions.update(part.versions)
        live.redacted.update(part.redacted)
        live.lumped += part.lumped + sum(n for name, n, c in zip(part.segments, part.segment_rows, new)
                                         if c == live._codes.get(OTHER_SEGMENT) and name != OTHER_SEGMENT)
        for old, n in enumerate(part.segment_rows):
            live.segment_rows[new[old]] += n
        for name, counts in part.counts.items():
            live.counts[name] += counts
        for name, per_group in part.group_counts.items():
            merged = live.group_counts.setdefault(name, [np.zeros_like(live.counts[name]) for _ in segments])
            for old, counts in enumerate(per_group):
                merged[new[old]] += counts
        for name, tally in part.group_finite.items():
            merged_tally = live.group_finite.setdefault(name, [0] * len(segments))
            for old, n in enumerate(tally):
                merged_tally[new[old]] += n
    _merge_samples(live, parts, codes, np.random.default_rng(seed))
    return live


def _merge_samples(live: Live, parts: list[Live], codes: list[np.ndarray], rng: np.random.Generator) -> None:
    """A uniform sample of the union: from each part a hypergeometric share of the rows."""
    offered = np.array([part.offered for part in parts], np.int64)
    size = min(int(offered.sum()), live.sample_size)
    taken = rng.multivariate_hypergeometric(offered, size) if size else np.zeros(len(parts), np.int64)
    start = 0
    for part, n, new in zip(parts, taken.tolist(), codes):
        pick = np.sort(rng.choice(part.sampled_rows, n, replace=False))
        live.sample[start:start + n] = part.sample[pick]
        live.sample_groups[start:start + n] = new[part.sample_groups[pick]]
        start += n
    live.offered = int(offered.sum())
