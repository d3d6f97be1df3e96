"""Processes of the native (Docker-free) stack: start, wait until ready, stop.

The same config files as docker-compose.yml, with only the service addresses
substituted (``demo:8000`` becomes ``127.0.0.1:<port>``). Used by ``make demo``
and by the end-to-end tests.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The two lines of Prometheus and Alertmanager the project runs on: Debian's packages
# (Prometheus 2.42, Alertmanager 0.25) and the current releases (Prometheus 3.x,
# Alertmanager 0.3x), which scripts/install-prometheus3.sh builds into a cache. The tests
# check the rules and configs with both lines' promtool and amtool and run the live stack
# on the current line; the demo runs the current line when it is built, Debian's otherwise.
DEBIAN, CURRENT = "debian", "current"
LINES = (DEBIAN, CURRENT)
INSTALL = {
    DEBIAN: "apt-get install prometheus prometheus-alertmanager (or run `make deps`)",
    CURRENT: "run scripts/install-prometheus3.sh (`make deps` runs it; the first build takes about 15 minutes)",
}
TOOLS = ("prometheus", "promtool", "alertmanager", "amtool")
_DEBIAN_NAMES = {"alertmanager": "prometheus-alertmanager"}


@functools.cache
def current_bin_dirs() -> tuple[Path, ...]:
    """The cache directories of the current line (scripts/install-prometheus3.sh --path)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-prometheus3.sh"), "--path"],
                          capture_output=True, text=True, check=True, timeout=30)
    return tuple(Path(p) for p in done.stdout.strip().split(":"))


def find_binary(name: str, line: str) -> str | None:
    """Path of prometheus, promtool, alertmanager or amtool of one line, or None."""
    if name not in TOOLS or line not in LINES:
        return None
    if line == CURRENT:
        return next((str(d / name) for d in current_bin_dirs() if os.access(d / name, os.X_OK)), None)
    name = _DEBIAN_NAMES.get(name, name)
    if os.access(f"/usr/bin/{name}", os.X_OK):
        return f"/usr/bin/{name}"
    path = shutil.which(name)
    return path if path and Path(path).parent not in current_bin_dirs() else None


def binary(name: str, line: str | None = CURRENT) -> str:
    """Path of prometheus, promtool, alertmanager or amtool of this line (None: the current
    line if it is built, else Debian's), or an error that says how to install it."""
    for candidate in (CURRENT, DEBIAN) if line is None else (line,):
        if path := find_binary(name, candidate):
            return path
    raise RuntimeError(f"{name} ({line or CURRENT} line) not found: {INSTALL[line or CURRENT]}")


@dataclass
class Process:
    """A child process with its log file; ``ready_url`` answers 200 once it is up."""

    name: str
    command: list[str]
    ready_url: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Process":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, env={**os.environ, **self.env}, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n"
                                   + self.log.read_text(errors="replace")[-2000:])
            try:
                if requests.get(self.ready_url, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s at {self.ready_url}; see {self.log}")
            time.sleep(0.3)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 20 seconds."""
        if self.proc is not None:
            stop_process(self.proc, 20, group=True)



def stop_process(proc: subprocess.Popen, timeout: float, group: bool = False) -> None:
    """SIGTERM a running process (or its process group), SIGKILL it after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()

@dataclass
class Elasticsearch:
    """A single loopback node run by scripts/elasticsearch.sh (security off: loopback only)."""

    directory: Path
    port: int

    name = "elasticsearch"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "scripts" / "elasticsearch.sh"), *args], capture_output=True, text=True,
                              timeout=300, check=False)

    def start(self) -> "Elasticsearch":
        done = self._script("start", str(self.directory), str(self.port))
        if done.returncode != 0:
            raise RuntimeError(f"Elasticsearch did not start (run `make deps` first?): {done.stderr[-2000:]}")
        return self

    def alive(self) -> bool:
        """The node's process still runs (its pid file is the script's)."""
        try:
            os.kill(int((self.directory / "es.pid").read_text()), 0)
        except (OSError, ValueError):
            return False
        return True

    def stop(self) -> None:
        self._script("stop", str(self.directory))


def substituted_copy(source: Path, target_dir: Path, addresses: dict[str, str], links: tuple[str, ...]) -> Path:
    """Copy a config file into ``target_dir`` with addresses replaced, and link the
    folders it names by relative path (rules/, templates/, ...) next to the copy."""
    target_dir.mkdir(parents=True, exist_ok=True)
    text = source.read_text()
    for compose_address, native_address in addresses.items():
        text = text.replace(compose_address, native_address)
    target = target_dir / source.name
    target.write_text(text)
    for name in links:
        link = target_dir / name
        if not link.exists():
            link.symlink_to(source.parent / name)
    return target
