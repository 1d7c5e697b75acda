"""The benchmarks' workload and the one way to time it, through the service or not.

- ``make_workload``: users with histories from a market's catalogue, each asking to
  rank candidates; ``whole_catalogue``: the same users asking for the market's whole
  catalogue instead (no candidates sent); ``post_histories`` gives a running service
  those histories.
- ``Connection`` and ``drive``: keep-alive clients sending the workload's recommend
  requests to the service for a while, each request's latency recorded; ``Client``,
  a ``Connection`` that reconnects and times out, for runs that must count failures
  rather than stop at the first (benchmarks.soak, benchmarks.loop_load).
- ``direct_calls`` and ``time_direct_calls``: the same requests as direct calls of the
  graph in this process, timed by ``timing.time_calls``; ``ceiling_width``: how many
  requests a call holds. The ceiling built on them (the most the model alone can do)
  is benchmarks/ceiling.py.
- ``Measurement`` and ``measurement_table``: what one run did, and the runs of several
  rounds as a markdown table.

    workload = make_workload(store, None, users=256, candidates=200)
    with running_service(store.root, redis_url, free_port()) as service:
        asyncio.run(post_histories(service.url, workload))
        run = asyncio.run(drive(service.url, workload, 32, 10.0, "service"))
    top = Ceiling(store, provider="cpu", threads=0).measure(workload, clients=32, seconds=10.0)
    print(measurement_table([[run, top[0]]]))
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import numpy as np

from benchmarks.processes import API_KEY
from benchmarks.timing import time_calls
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from model_store.vocab import IntArray, Vocabulary, pad_rows
from service.graphs import Graph, LoadedVersion


@dataclass(frozen=True)
class Workload:
    market: str
    users: list[str]
    histories: list[list[str]]  # oldest first
    # One request per user: what the service scores for it (the ceiling scores the same).
    candidates: list[list[str]]
    # The requests send no candidates: the service ranks the market's whole catalogue.
    whole: bool = False

    def bodies(self) -> list[dict[str, object]]:
        if self.whole:
            return [{"user_id": u, "k": 10} for u in self.users]
        return [
            {"user_id": u, "candidates": c, "k": 10}
            for u, c in zip(self.users, self.candidates, strict=True)
        ]


def catalogue_items(store: ModelStore, market: str | None) -> tuple[str, list[str]]:
    """The market (default: the largest) and its catalogue's item ids, in the
    catalogue's order (most popular first), of the store's current version."""
    version = store.open()
    catalogues = load_catalogues(version.file(version.manifest.catalogues))
    market = market or max(catalogues, key=lambda m: len(catalogues[m]))
    vocab = Vocabulary.load(version.file(version.manifest.items))
    return market, [vocab.item(int(i)) for i in catalogues[market].items]


def make_workload(
    store: ModelStore, market: str | None, users: int, candidates: int, seed: int = 0
) -> Workload:
    """Users with 5..50 items of the market's catalogue (default: the largest market),
    each asking to rank ``candidates`` other catalogue items."""
    market, items = catalogue_items(store, market)
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


def whole_catalogue(workload: Workload, catalogue: Sequence[str]) -> Workload:
    """The same users and histories, each asking for the whole ``catalogue`` (the
    workload's market's, in its order) with no candidates sent. Each request's
    candidates are what the service then scores: the catalogue less the user's own
    items (``exclude_seen``), in the catalogue's order."""
    ranked = []
    for history in workload.histories:
        seen = set(history)
        ranked.append([item for item in catalogue if item not in seen])
    return Workload(workload.market, workload.users, workload.histories, ranked, whole=True)


async def post_histories(url: str, workload: Workload) -> None:
    """Give the service at ``url`` (started by ``running_service``) every user's history."""
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": API_KEY}) as http:
        for user, history in zip(workload.users, workload.histories, strict=True):
            events = [{"market": workload.market, "user_id": user, "item_id": i} for i in history]
            reply = await http.post("/events", json={"events": events})
            reply.raise_for_status()


@dataclass(frozen=True)
class Measurement:
    name: str
    requests: int
    candidates: int
    seconds: float
    latencies: Sequence[float]  # seconds, per request; empty for direct calls
    cpu_seconds: float = 0.0  # this process's during the run: the load generator's, or the model's

    @property
    def candidates_per_s(self) -> float:
        return self.candidates / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if len(self.latencies) else 0.0


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator shares the machine with
    the service, so it should cost the service as little CPU as it can."""

    extra_headers = ""  # e.g. "X-API-Key: ...\r\n"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parsed = urlsplit(url)
        return cls(*await asyncio.open_connection(parsed.hostname, parsed.port))

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        """The reply's status and body."""
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


class Client(Connection):
    """A keep-alive client that connects when first used, reconnects after a failure or
    an idle spell, and gives up on a reply after ``timeout_s``: a long run (a soak, a
    version switch) should outlive a dropped connection and count it, not stop."""

    IDLE_S = 4.0  # uvicorn closes connections idle for 5 s: reopen before, not race it

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.used, self.connected = 0.0, False
        if api_key is not None:  # POST /events needs it
            self.extra_headers = f"X-API-Key: {api_key}\r\n"

    async def send(self, path: str, payload: bytes) -> tuple[int, bytes]:
        """The reply's status and body; ``(0, b"")`` if none came (refused, reset, timed
        out)."""
        if time.monotonic() - self.used > self.IDLE_S:
            self.close()
        self.used = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                if not self.connected:
                    fresh = await Connection.open(self.url)
                    self.reader, self.writer, self.connected = fresh.reader, fresh.writer, True
                return await self.post(path, payload)
        except (OSError, EOFError, ValueError, RuntimeError, TimeoutError):
            self.close()
            return 0, b""

    def close(self) -> None:
        if self.connected:
            super().close()
            self.connected = False


async def drive(
    url: str | Sequence[str], workload: Workload, clients: int, seconds: float, name: str
) -> Measurement:
    """``clients`` connections, each sending the workload's recommend requests one after
    another for ``seconds`` (after one untimed request each); any reply but 200 raises.
    Several URLs (replicas of one server): the connections are dealt among them."""
    urls = [url] if isinstance(url, str) else list(url)
    payloads = [json.dumps(body).encode() for body in workload.bodies()]
    sizes = [len(c) for c in workload.candidates]
    latencies: list[float] = []
    scored = 0
    path = f"/markets/{workload.market}/recommend"
    connections = [await Connection.open(urls[c % len(urls)]) for c in range(clients)]
    try:
        for i, connection in enumerate(connections):  # warm-up
            status, body = await connection.post(path, payloads[i % len(payloads)])
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:300]!r}")
        stop = time.perf_counter() + seconds
        start, cpu = time.perf_counter(), time.process_time()

        async def client(offset: int, connection: Connection) -> None:
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
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        for connection in connections:
            connection.close()
    return Measurement(name, len(latencies), scored, elapsed, latencies, cpu)


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


def time_direct_calls(
    graph: Graph, calls: Sequence[Call], seconds: float, name: str
) -> Measurement:
    """``calls`` in turn for ``seconds``; the measurement's requests are the calls made."""

    def score(i: int) -> None:
        one = calls[i % len(calls)]
        graph.score(one.history, one.candidates, one.market)

    timed = time_calls(score, seconds)
    scored = sum(calls[i % len(calls)].scored for i in range(timed.calls))
    return Measurement(name, timed.calls, scored, timed.seconds, [], timed.cpu_seconds)


# The most candidate rows a ceiling call holds. On CPU a row costs more in a wider call
# (benchmarks/call_width.py): 32 requests of 200 candidates (6,400 rows) are within 2%
# of the best width, and whole catalogues (5,735 rows each) scored more one a call than
# two or four a call (benchmarks.compare's ceiling, interleaved, on the shared machine).
CEILING_ROWS = 6_400


def ceiling_width(workload: Workload, clients: int, rows: int = CEILING_ROWS) -> int:
    """Requests per ceiling call: ``clients``, or fewer where that many would exceed
    ``rows`` candidate rows (whole catalogues on a CPU), but at least one."""
    widest = max((len(c) for c in workload.candidates), default=1)
    return max(1, min(clients, rows // max(widest, 1)))


def measurement_table(rounds: Sequence[Sequence[Measurement]]) -> str:
    """One row per run (the last of each round is its ceiling): medians over rounds,
    each round's share of its own ceiling, latency percentiles over every request of
    every round."""
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
