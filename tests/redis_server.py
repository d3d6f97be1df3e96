"""A real redis-server (Debian's package) on a free loopback port, started by the tests."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port


class RedisServer:
    """redis-server in its own directory; ``appendonly`` keeps its data across a restart."""

    def __init__(self, workdir: Path, *, appendonly: bool = True, port: int | None = None,
                 extra: tuple[str, ...] = ()):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed: scripts/install-deps.sh installs Debian's redis-server")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendonly = appendonly
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--daemonize", "no", "--logfile", str(self.workdir / "redis.log"), *self.extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return
            except Exception:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.workdir / "redis.log"
                self.stop()
                pytest.fail("redis-server did not start:\n" + (log.read_text() if log.exists() else ""))
            time.sleep(0.05)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing is answered (a slow Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()  # SIGTERM: with appendonly, the AOF is fsynced before exit
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
