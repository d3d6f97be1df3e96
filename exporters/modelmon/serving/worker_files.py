"""The files of prometheus-client's multiprocess directory, kept bounded.

Every worker writes its values to ``<kind>_<pid>.db`` files (``counter``, ``histogram``,
``summary``, ``gauge_<mode>``) and a scrape sums all of them. A worker that exits leaves
its files behind, so a server that recycles workers (gunicorn ``--max-requests``,
uvicorn ``--limit-max-requests``) grows the directory and every scrape without end.

``MetricsDirectory.fold_dead_workers`` folds the files of dead workers into one
aggregate per kind, ``<kind>_folded.db``, in the client's own file format (so its
``MultiProcessCollector`` reads it like any worker's): counters, histograms and
summaries are summed, so nothing goes backwards; ``min``/``max``/``sum``/``mostrecent``
gauges are combined the way a scrape combines them; ``live*`` gauges of dead workers
are dropped (as ``mark_process_dead`` does); ``all`` gauges are per process by
definition and stay.

Safety. Folds and reads take a lock on ``modelmon-fold.lock`` (exclusive to fold,
shared to read), so a scrape sees the files either before or after a fold. A fold
writes the new aggregates beside the old ones, then commits by renaming a journal
into place, then renames the aggregates over the old ones and deletes the dead
files. A process killed before the commit leaves the old state (its half-written
files are discarded); one killed after it leaves a journal that the next fold or read
finishes. Either way nothing is lost or counted twice. Live workers' files are never
touched. (A process crash, not a machine crash: nothing is fsynced, as the directory
is normally a tmpfs.)
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator

from prometheus_client.mmap_dict import MmapedDict

FOLDED = "folded"
LOCK_FILE = "modelmon-fold.lock"
JOURNAL = "modelmon-fold.journal"
_NEW = ".new"  # aggregates being written; outside the client's *.db glob
_WORKER_FILE = re.compile(r"^(?P<kind>counter|histogram|summary|gauge_[a-z]+)_(?P<owner>\d+|folded)\.db$")
_SUMMED = ("counter", "histogram", "summary", "gauge_sum")
_COMBINED = {"gauge_min": min, "gauge_max": max}


# A flock belongs to the open file, which a fork shares with the child: a worker forked
# while a thread of its parent holds the lock (a scrape served by gunicorn's master,
# modelmon.gunicorn.serve_metrics) would hold it for its whole life, and the master's next
# fold would wait for that worker to exit. So a fork waits until no thread of this process
# holds the lock, and no thread takes it during a fork.
_fork_guard = threading.RLock()


def _new_fork_guard() -> None:
    global _fork_guard
    _fork_guard = threading.RLock()


os.register_at_fork(before=lambda: _fork_guard.acquire(), after_in_parent=lambda: _fork_guard.release(),
                    after_in_child=_new_fork_guard)


def _has_header(path: str) -> bool:
    """Whether a metrics file has its header yet. prometheus-client creates a worker's file,
    then sizes it: a scrape in between (a worker starting) finds it empty, with no values,
    and the client's reader fails on it."""
    try:
        return os.stat(path).st_size >= 8
    except FileNotFoundError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsDirectory:
    """One multiprocess directory: reading it consistently, folding dead workers, clearing it."""

    def __init__(self, path: str):
        self.path = path

    def _join(self, name: str) -> str:
        return os.path.join(self.path, name)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[int]:
        with _fork_guard:  # no fork while the lock's file is open here (see above)
            fd = os.open(self._join(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, mode)
                yield fd
            finally:
                os.close(fd)  # releases the lock

    def dead_worker_files(self, names: Iterable[str]) -> list[str]:
        """The names of worker files whose process is gone."""
        dead = []
        alive: dict[int, bool] = {}
        for name in names:
            match = _WORKER_FILE.match(name)
            if match is None or match["owner"] == FOLDED:
                continue
            pid = int(match["owner"])
            if pid not in alive:
                alive[pid] = pid_alive(pid)
            if not alive[pid] and match["kind"] != "gauge_all":
                dead.append(name)
        return dead

    @contextmanager
    def reading(self, on_error=None) -> Iterator[list[str]]:
        """The ``*.db`` paths to read, stable while the block runs.

        Dead workers' files, if any, are folded first; a failed fold is reported to
        ``on_error`` and the files are read as they are.
        """
        with self._locked(fcntl.LOCK_SH) as fd:
            names = os.listdir(self.path)
            if JOURNAL in names or self.dead_worker_files(names):
                fcntl.flock(fd, fcntl.LOCK_EX)  # not atomic: re-read under the exclusive lock
                try:
                    self._fold_locked()
                except Exception as exc:
                    if on_error is None:
                        raise
                    on_error(exc)
                fcntl.flock(fd, fcntl.LOCK_SH)
                names = os.listdir(self.path)
            yield [path for path in (self._join(name) for name in sorted(names) if name.endswith(".db"))
                   if _has_header(path)]

    def fold_dead_workers(self) -> int:
        """Fold the files of every dead worker into the aggregates; returns how many files went."""
        with self._locked(fcntl.LOCK_EX):
            return self._fold_locked()

    def clear(self) -> None:
        """Remove every metrics file but this process's own (a new server run starts from nothing).

        This process's files stay: a gunicorn master with ``--preload`` has written its
        gauges (model info, reference shares) before its ``on_starting`` hook runs.
        """
        os.makedirs(self.path, exist_ok=True)
        own = f"_{os.getpid()}.db"
        with self._locked(fcntl.LOCK_EX):
            for name in os.listdir(self.path):
                stale = name.endswith((".db", ".db" + _NEW)) and not name.endswith(own)
                if stale or name.startswith(JOURNAL):
                    os.remove(self._join(name))

    # -- under the exclusive lock ----------------------------------------------

    def _fold_locked(self) -> int:
        self._recover()
        dead = self.dead_worker_files(os.listdir(self.path))
        if not dead:
            return 0
        by_kind: dict[str, list[str]] = {}
        for name in dead:
            kind = _WORKER_FILE.match(name)["kind"]
            if not kind.startswith("gauge_live"):
                by_kind.setdefault(kind, []).append(name)
        renames = []
        for kind, names in sorted(by_kind.items()):
            final = f"{kind}_{FOLDED}.db"
            values = self._merged(kind, [final] + names)
            _write(self._join(final + _NEW), values)
            renames.append([final + _NEW, final])
        self._commit({"rename": renames, "remove": dead})
        return len(dead)

    def _merged(self, kind: str, names: list[str]) -> dict[str, tuple[float, float]]:
        """key -> (value, timestamp) over the files, combined as a scrape combines them."""
        merged: dict[str, tuple[float, float]] = {}
        combine = _COMBINED.get(kind)
        for name in names:
            path = self._join(name)
            try:
                values = MmapedDict.read_all_values_from_file(path) if _has_header(path) else []
            except FileNotFoundError:  # no aggregate yet
                continue
            for key, value, timestamp, _ in values:
                old = merged.get(key)
                if old is None:
                    merged[key] = (value, timestamp)
                elif kind in _SUMMED:
                    merged[key] = (old[0] + value, max(old[1], timestamp))
                elif combine is not None:
                    merged[key] = (combine(old[0], value), max(old[1], timestamp))
                elif timestamp > old[1]:  # mostrecent
                    merged[key] = (value, timestamp)
        return merged

    def _commit(self, journal: dict) -> None:
        pending = self._join(JOURNAL + _NEW)
        with open(pending, "w") as f:
            json.dump(journal, f)
        os.replace(pending, self._join(JOURNAL))  # the commit point
        self._recover()

    def _recover(self) -> None:
        """Finish a committed fold, or discard an uncommitted one."""
        journal = self._join(JOURNAL)
        try:
            with open(journal) as f:
                steps = json.load(f)
        except FileNotFoundError:
            steps = None
        if steps is not None:
            for new, final in steps["rename"]:
                if os.path.exists(self._join(new)):
                    os.replace(self._join(new), self._join(final))
            for name in steps["remove"]:
                try:
                    os.remove(self._join(name))
                except FileNotFoundError:
                    pass
            os.remove(journal)
        for name in os.listdir(self.path):  # a fold killed before its commit
            if name.endswith(_NEW):
                os.remove(self._join(name))


def _write(path: str, values: dict[str, tuple[float, float]]) -> None:
    if os.path.exists(path):
        os.remove(path)
    target = MmapedDict(path)
    try:
        for key, (value, timestamp) in values.items():
            target.write_value(key, value, timestamp)
    finally:
        target.close()
