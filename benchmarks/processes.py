"""Real server processes for the benchmarks and the tests: the service, redis-server.

``ManagedProcess`` is the one way this project starts a server and waits for it:
start a command with its output in a temporary file, poll a readiness check until it
passes (or the process exits, or time runs out), and stop it: terminate, then kill
after a timeout. ``RunningService`` (``running_service``) and ``RedisProcess`` are
made of it; so is the test suite's Prometheus server.

    with running_service(Path("store"), "redis://localhost:6379/0", free_port()) as svc:
        httpx.get(f"{svc.url}/markets")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self

import httpx
import redis

if TYPE_CHECKING:  # not at run time: onnxruntime is no concern of a process starter
    from service.sessions import Provider

API_KEY = "bench"  # the key running_service gives the service


class NotReady(RuntimeError):
    """A started process exited, or did not pass its readiness check in time."""


def free_port(highest: int = 65_535) -> int:
    """A loopback port nobody listens on, at most ``highest``."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= highest:
            return port


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness check: ``url`` answers 200 (no connection yet counts as not ready)."""

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    return ready


class ManagedProcess:
    """A server process: ``start`` runs ``command`` and returns once ``ready()`` is true;
    ``stop`` terminates it, and kills it if it has not exited ``stop_s`` later. Its
    stdout and stderr go to a temporary file (a pipe nobody reads would block the
    process once full), kept across a ``kill`` and ``start`` and closed by ``stop``.
    With ``own_group``, the process leads a process group of its own and ``stop`` also
    kills what is left of that group (the processes a Ray driver starts can outlive it).
    As a context manager: started on entry, stopped on exit."""

    def __init__(
        self,
        command: Sequence[str],
        ready: Callable[[], bool],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        ready_s: float = 30,
        poll_s: float = 0.1,
        stop_s: float = 30,
        own_group: bool = False,
    ) -> None:
        self.command = list(command)
        self.own_group = own_group
        self.ready = ready
        self.name = name
        self.env = dict(env) if env is not None else None
        self.ready_s, self.poll_s, self.stop_s = ready_s, poll_s, stop_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, f"{self.name} was never started"
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        """Start the command; return once ready, else stop it and raise ``NotReady``."""
        if self._log is None or self._log.closed:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115  (stop closes it)
        self._process = subprocess.Popen(
            self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            process_group=0 if self.own_group else None,
        )  # fmt: skip
        deadline = time.monotonic() + self.ready_s
        try:
            while not self.ready():
                if self._process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_text()[-2000:]
                    raise NotReady(f"{self.name} did not become ready:\n{tail}")
                time.sleep(self.poll_s)
        except BaseException:  # NotReady, an interrupt: nothing outlives a failed start
            self.stop()
            raise

    def log_text(self) -> str:
        """What the process wrote so far (every start since the last ``stop``)."""
        if self._log is None or self._log.closed:
            return ""
        fd = self._log.fileno()
        # pread leaves the offset the process writes at alone.
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def kill(self) -> None:
        """``kill -9``: no shutdown, no last write. The log stays for a restart."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Terminate, then kill after ``stop_s``; close the log."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(self.stop_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self.own_group:
            with contextlib.suppress(ProcessLookupError):  # nothing of the group is left
                os.killpg(self._process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class RunningService(ManagedProcess):
    """The service (``python -m service``) on a loopback port, ready once /readyz says so."""

    def __init__(self, port: int, env: Mapping[str, str], ready_s: float = 120) -> None:
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "service", "--port", str(port)]
        super().__init__(
            command, http_ready(f"{self.url}/readyz"), name="the service", env=env,
            ready_s=ready_s, poll_s=0.2,
        )  # fmt: skip


@contextmanager
def running_service(
    store: Path,
    redis_url: str,
    port: int,
    batching: bool = True,
    threads: int = 0,
    provider: Provider = "cpu",
    *,
    env: Mapping[str, str] | None = None,
    ready_s: float = 120,
) -> Iterator[RunningService]:
    """The service serving ``store``, once ready, with ``API_KEY`` as its key and no
    periodic reload; ``env`` adds ``CMR_*`` settings."""
    full_env = (
        os.environ
        | {
            "CMR_STORE": str(store),
            "CMR_REDIS_URL": redis_url,
            "CMR_API_KEY": API_KEY,
            "CMR_BATCHING": "true" if batching else "false",
            "CMR_INTRA_THREADS": str(threads),
            "CMR_PROVIDER": provider,
            "CMR_RELOAD_INTERVAL_S": "0",
        }
        | dict(env or {})
    )
    with RunningService(port, full_env, ready_s) as service:
        yield service


class RedisProcess(ManagedProcess):
    """One redis-server on a fixed loopback port and folder, so a restart finds its
    append-only file (``appendfsync always``: an acknowledged write is on disk).
    ``args`` are more redis-server options, after these defaults: a later one wins.
    The reliability tests kill, freeze and restart it."""

    def __init__(self, folder: Path, *args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; scripts/test.sh installs it"
        # A cluster node also listens on its port + 10,000 (the cluster bus).
        self.port = port or free_port(55_535 if "--cluster-enabled" in args else 65_535)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always", *args,
        ]  # fmt: skip
        name = f"redis-server on port {self.port}"
        super().__init__(command, self._answers, name=name, ready_s=10, poll_s=0.01, stop_s=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.thaw()  # a frozen server would not act on SIGTERM
        super().stop()
