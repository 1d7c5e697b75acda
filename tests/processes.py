"""Real redis-server processes the reliability tests can kill, freeze and restart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port(highest: int = 65_535) -> int:
    """A loopback port nobody listens on, at most ``highest``."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= highest:
            return port


class RedisProcess:
    """One redis-server on a fixed loopback port and folder, so a restart finds its
    append-only file (``appendfsync always``: an acknowledged write is on disk).
    ``args`` are more redis-server options, after these defaults: a later one wins."""

    def __init__(self, folder: Path, *args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; scripts/test.sh installs it"
        self.binary = binary
        self.folder = folder
        cluster = "--cluster-enabled" in args
        # A cluster node also listens on its port + 10,000 (the cluster bus).
        self.port = port or free_port(55_535 if cluster else 65_535)
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, wait_s: float = 10) -> None:
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
            str(self.folder), "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.01)
        client.close()

    def kill(self) -> None:
        """``kill -9``: no shutdown, no last write."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            self.process.wait(10)
