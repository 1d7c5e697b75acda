"""``cmr bench serve``: the service under concurrent clients, against its model-bound ceiling.

In one round: start the service (a ``cmr serve`` process) with batching on, then off;
give users histories through ``POST /events``; let ``clients`` concurrent clients
send recommendation requests of ``candidates`` candidates each for ``seconds``; then
call the same graph directly, in the bench process, on the same requests grouped
``clients`` at a time: the most the model alone can do. Throughput is candidates
scored per second; latency percentiles are per request as the clients saw them.
Rounds repeat the three runs; the table gives each run's median over rounds and its
share of the ceiling measured in the same round (shared machines drift).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import httpx
import numpy as np

from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from model_store.vocab import IntArray, Vocabulary, pad_rows
from service.graphs import Graph, LoadedVersion
from service.loading import load_version
from service.sessions import Provider


@dataclass(frozen=True)
class Workload:
    market: str
    users: list[str]
    histories: list[list[str]]  # oldest first
    candidates: list[list[str]]  # one request per user

    def bodies(self) -> list[dict[str, object]]:
        return [
            {"user_id": u, "candidates": c, "k": 10}
            for u, c in zip(self.users, self.candidates, strict=True)
        ]


@dataclass(frozen=True)
class Measurement:
    name: str
    requests: int
    candidates: int
    seconds: float
    latencies: Sequence[float]  # seconds, per request; empty for the ceiling

    @property
    def candidates_per_s(self) -> float:
        return self.candidates / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if len(self.latencies) else 0.0


def make_workload(
    store: ModelStore, market: str | None, users: int, candidates: int, seed: int = 0
) -> Workload:
    """Users with 5..50 items of the market's catalogue, each asking to rank
    ``candidates`` other catalogue items."""
    version = store.open()
    catalogues = load_catalogues(version.file(version.manifest.catalogues))
    market = market or max(catalogues, key=lambda m: len(catalogues[m]))
    vocab = Vocabulary.load(version.file(version.manifest.items))
    items = [vocab.item(int(i)) for i in catalogues[market].items]
    if len(items) < candidates + 50:
        raise ValueError(f"market {market} sells {len(items)} items, too few for this workload")
    rng = np.random.default_rng(seed)
    histories, asks = [], []
    for _ in range(users):
        chosen = rng.choice(len(items), size=candidates + 50, replace=False)
        length = int(rng.integers(5, 51))
        histories.append([items[i] for i in chosen[:length]])
        asks.append([items[i] for i in chosen[50:]])  # never an item of the history
    names = [f"bench-{i}" for i in range(users)]
    return Workload(market, names, histories, asks)


@dataclass
class RunningService:
    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]  # the service's stdout and stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


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
    """A ``cmr serve`` process, once /readyz says ready; ``env`` adds ``CMR_*`` settings."""
    full_env = (
        os.environ
        | {
            "CMR_STORE": str(store),
            "CMR_REDIS_URL": redis_url,
            "CMR_API_KEY": "bench",
            "CMR_BATCHING": "true" if batching else "false",
            "CMR_INTRA_THREADS": str(threads),
            "CMR_PROVIDER": provider,
            "CMR_RELOAD_INTERVAL_S": "0",
        }
        | dict(env or {})
    )
    command = [sys.executable, "-m", "service", "--port", str(port)]
    # The log goes to a file: a pipe nobody reads would block the service once full.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        service = RunningService(f"http://127.0.0.1:{port}", process, log)
        try:
            deadline = time.monotonic() + ready_s
            while True:
                try:
                    if httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = service.log_text()[-2000:]
                    raise RuntimeError(f"the service did not become ready:\n{tail}")
                time.sleep(0.2)
            yield service
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _post_histories(url: str, workload: Workload) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": "bench"}) as http:
        for user, history in zip(workload.users, workload.histories, strict=True):
            events = [{"market": workload.market, "user_id": user, "item_id": i} for i in history]
            reply = await http.post("/events", json={"events": events})
            reply.raise_for_status()


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator shares the machine with
    the service, so it should cost the service as little CPU as it can."""

    extra_headers = ""  # e.g. "X-API-Key: ...\r\n"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> _Connection:
        parsed = httpx.URL(url)
        return cls(*await asyncio.open_connection(parsed.host, parsed.port))

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"{self.extra_headers}Content-Length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        await self.writer.drain()
        reply = await self.reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?i)content-length: *(\d+)", reply)
        if found is None:
            raise RuntimeError(f"reply without content-length: {reply[:200]!r}")
        body = await self.reader.readexactly(int(found.group(1)))
        return int(reply[9:12]), body

    def close(self) -> None:
        self.writer.close()


async def _drive(
    url: str, workload: Workload, clients: int, seconds: float, name: str
) -> Measurement:
    payloads = [json.dumps(body).encode() for body in workload.bodies()]
    sizes = [len(c) for c in workload.candidates]
    latencies: list[float] = []
    scored = 0
    path = f"/markets/{workload.market}/recommend"
    connections = [await _Connection.open(url) for _ in range(clients)]
    try:
        for i, connection in enumerate(connections):  # warm-up
            status, body = await connection.post(path, payloads[i % len(payloads)])
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:300]!r}")
        stop = time.perf_counter() + seconds
        start = time.perf_counter()

        async def client(offset: int, connection: _Connection) -> None:
            nonlocal scored
            i = offset
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                status, body = await connection.post(path, payloads[i % len(payloads)])
                if status != 200:
                    raise RuntimeError(f"{path}: {status} {body[:300]!r}")
                latencies.append(time.perf_counter() - sent)
                scored += sizes[i % len(sizes)]
                i += clients

        await asyncio.gather(*(client(c, conn) for c, conn in enumerate(connections)))
        elapsed = time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    return Measurement(name, len(latencies), scored, elapsed, latencies)


class Call(NamedTuple):
    """The inputs of one direct scoring call, and the candidates it scores."""

    history: IntArray
    candidates: IntArray
    market: IntArray
    scored: int


def direct_calls(loaded: LoadedVersion, workload: Workload, width: int) -> list[Call]:
    """The workload's requests as padded calls of ``width`` requests each."""
    model = loaded.markets[workload.market]
    histories = [loaded.vocabulary.lookup(h) for h in workload.histories]
    candidates = [loaded.vocabulary.lookup(c) for c in workload.candidates]
    calls = []
    for first in range(0, len(histories), width):
        part = slice(first, first + width)
        calls.append(
            Call(
                pad_rows(histories[part]),
                pad_rows(candidates[part]),
                np.full(len(histories[part]), model.index, dtype=np.int64),
                sum(len(c) for c in candidates[part]),
            )
        )
    return calls


def time_calls(graph: Graph, calls: Sequence[Call], seconds: float, name: str) -> Measurement:
    """``calls`` in turn for ``seconds``; the measurement's requests are the calls made."""
    scored, made = 0, 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        call = calls[made % len(calls)]
        graph.score(call.history, call.candidates, call.market)
        scored += call.scored
        made += 1
    return Measurement(name, made, scored, time.perf_counter() - began, [])


def ceiling(
    store: ModelStore, workload: Workload, clients: int, seconds: float, threads: int,
    provider: Provider,
) -> Measurement:  # fmt: skip
    """The same graph, the same requests, called directly ``clients`` requests at a time."""
    loaded = load_version(store, None, provider=provider, intra_threads=threads, inter_threads=1)
    graph = loaded.markets[workload.market].graph
    calls = direct_calls(loaded, workload, clients)
    graph.score(*calls[0][:3])  # warm-up
    return time_calls(graph, calls, seconds, "model alone (ceiling)")


def bench_serve(
    store_root: Path,
    redis_url: str,
    clients: int = 32,
    candidates: int = 200,
    users: int = 256,
    seconds: float = 10.0,
    threads: int = 0,
    provider: Provider = "auto",
    port: int = 8765,
    market: str | None = None,
    rounds: int = 1,
) -> list[list[Measurement]]:
    """``rounds`` lists of [batching on, batching off, ceiling]."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    store = ModelStore(store_root)
    workload = make_workload(store, market, users, candidates)
    results = []
    for _ in range(rounds):
        one = []
        for batching in (True, False):
            with running_service(store_root, redis_url, port, batching, threads, provider) as svc:
                asyncio.run(_post_histories(svc.url, workload))
                name = f"service, batching {'on' if batching else 'off'}"
                one.append(asyncio.run(_drive(svc.url, workload, clients, seconds, name)))
        one.append(ceiling(store, workload, clients, seconds, threads, provider))
        results.append(one)
    return results


def measurement_table(rounds: Sequence[Sequence[Measurement]]) -> str:
    """One row per run: medians over rounds, each round's share of its own ceiling,
    latency percentiles over every request of every round."""
    lines = [
        "| run | rounds | requests | candidates/s | of ceiling | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, first in enumerate(rounds[0]):
        runs = [r[i] for r in rounds]
        share = np.median(
            [m.candidates_per_s / r[-1].candidates_per_s for m, r in zip(runs, rounds, strict=True)]
        )
        pooled = Measurement(
            first.name, sum(m.requests for m in runs), sum(m.candidates for m in runs),
            sum(m.seconds for m in runs), [t for m in runs for t in m.latencies],
        )  # fmt: skip
        cps = np.median([m.candidates_per_s for m in runs])
        latency = [f"{pooled.percentile(q):.1f}" if pooled.latencies else "" for q in (50, 95, 99)]
        cells = [first.name, len(runs), pooled.requests, f"{cps:,.0f}", f"{share:.0%}", *latency]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"
