"""Processes of the native (Docker-free) stack: start, wait until ready, stop.

The same config files as docker-compose.yml, with only the service addresses
substituted (``demo:8000`` becomes ``127.0.0.1:<port>``). Used by ``make demo``
and by the end-to-end tests.
"""
from __future__ import annotations

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


def binary(name: str) -> str:
    """Path of a required program, or an error that says how to install it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: run `make deps` (Debian: apt-get install prometheus "
                           "prometheus-alertmanager)")
    return path


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
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


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
