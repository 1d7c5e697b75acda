"""The servers that benchmarks.compare puts side by side, each a process of its own.

A ``Peer`` names a server and starts it (a context manager giving its base URL):
the service with batching on and off (``running_service``), the same recommend
endpoint under Ray Serve (benchmarks/ray_peer.py) and a no-op FastAPI endpoint
(benchmarks/noop_peer.py). Every one is started for its runs and stopped after them,
so no server takes CPU from another's runs, or from the ceiling's.

    for peer in make_peers(store, redis_url, provider="cpu", threads=0, ray_replicas=2):
        with peer.start() as url:
            ...
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import KW_ONLY, dataclass
from functools import partial
from pathlib import Path

from benchmarks.processes import ManagedProcess, free_port, http_ready, running_service
from service.sessions import Provider

ROOT = Path(__file__).resolve().parents[1]  # benchmarks/ is run from here, not installed
SERVICE_ON, SERVICE_OFF = "service, batching on", "service, batching off"
RAY_SERVE = "Ray Serve, @serve.batch"
NO_OP = "no-op FastAPI (HTTP floor)"


@dataclass(frozen=True)
class Peer:
    name: str
    # Yields the base URLs of the server's processes: one, or the service's replicas.
    start: Callable[[], AbstractContextManager[list[str]]]
    _: KW_ONLY
    takes_events: bool  # can give users their histories (POST /events): the service
    ranks: bool  # answers with real rankings, checked against the service's


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ) | {"PYTHONPATH": path}


@contextmanager
def _service(
    store: Path, redis_url: str, *, batching: bool, threads: int, provider: Provider,
    replicas: int,
) -> Iterator[list[str]]:  # fmt: skip
    with ExitStack() as stack:
        urls = []
        for _ in range(replicas):
            service = running_service(store, redis_url, free_port(), batching, threads, provider)
            urls.append(stack.enter_context(service).url)
        yield urls


@contextmanager
def running_ray_peer(
    store: Path, redis_url: str, *, provider: Provider, threads: int, replicas: int
) -> Iterator[list[str]]:
    """benchmarks.ray_peer serving ``store``, once its app is deployed (Ray's start and
    every replica's load and warm-up take a while on 2 cores)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        ready = Path(folder) / "ready"
        command = [
            sys.executable, "-m", "benchmarks.ray_peer", "--store", str(store),
            "--redis-url", redis_url, "--port", str(port), "--provider", provider,
            "--threads", str(threads), "--replicas", str(replicas), "--ready-file", str(ready),
        ]  # fmt: skip
        # Its own process group: stop also ends any of Ray's processes its driver left.
        peer = ManagedProcess(
            command, ready.exists, name="the Ray Serve peer", env=_env(), ready_s=300,
            poll_s=0.5, stop_s=60, own_group=True,
        )  # fmt: skip
        with peer:
            yield [f"http://127.0.0.1:{port}"]


@contextmanager
def running_noop_peer() -> Iterator[list[str]]:
    """benchmarks.noop_peer, once it answers."""
    url = f"http://127.0.0.1:{(port := free_port())}"
    command = [sys.executable, "-m", "benchmarks.noop_peer", "--port", str(port)]
    with ManagedProcess(command, http_ready(f"{url}/readyz"), name="the no-op peer", env=_env()):
        yield [url]


def make_peers(
    store: Path, redis_url: str, *, provider: Provider, threads: int, ray_replicas: int,
    service_replicas: int = 1,
) -> list[Peer]:  # fmt: skip
    """The service on and off, Ray Serve, the no-op floor. ``threads``: onnxruntime
    threads per call, 0 for each server's own split of the cores (the service: cores
    over its scoring workers; Ray Serve: cores over its replicas). ``service_replicas``:
    service processes side by side (one machine's scale-out), the clients dealt among them."""
    cores = len(os.sched_getaffinity(0))
    service = partial(
        _service, store, redis_url, threads=threads, provider=provider,
        replicas=service_replicas,
    )  # fmt: skip
    ray = partial(
        running_ray_peer, store, redis_url, provider=provider,
        threads=threads or max(1, cores // ray_replicas), replicas=ray_replicas,
    )  # fmt: skip
    return [
        Peer(SERVICE_ON, partial(service, batching=True), takes_events=True, ranks=True),
        Peer(SERVICE_OFF, partial(service, batching=False), takes_events=True, ranks=True),
        Peer(RAY_SERVE, ray, takes_events=False, ranks=True),
        Peer(NO_OP, running_noop_peer, takes_events=False, ranks=False),
    ]
