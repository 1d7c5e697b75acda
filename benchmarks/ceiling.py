"""The ceiling of benchmarks.compare: the most the graph alone does on this machine.

The graph is called directly in this process on the workload's own requests, in two
ways, and the better one is the ceiling:

- one call at a time with onnxruntime's threads over every core, ``ceiling_width``
  requests a call (benchmarks.workload's ``ceiling``, as benchmarks.serve measures it);
- one caller per core at once, each with a session of its own on one thread, the
  workload's clients shared among them: how the servers compared run the graph (the
  service's scoring workers, Ray Serve's replicas). On a CPU this can beat the first:
  a call on one thread waits for no other thread, and a busy core holds up a call
  spread over both.

A server's share of the ceiling is then at most 100% but for noise, whichever way
suits the workload.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import replace

from benchmarks.comparison import CEILING
from benchmarks.workload import (
    CEILING_ROWS,
    Call,
    Measurement,
    Workload,
    ceiling_width,
    direct_calls,
    time_direct_calls,
)
from model_store.store import ModelStore
from service.graphs import LoadedVersion
from service.loading import load_version
from service.sessions import Provider


def requests_scored(calls: list[Call], made: int, first: int = 0, step: int = 1) -> int:
    """The requests in calls ``first``, ``first + step``, ... of ``made`` calls."""
    return sum(len(calls[(first + k * step) % len(calls)].history) for k in range(made))


class Ceiling:
    """The store's current version, loaded once (sessions of both kinds), timed per case."""

    def __init__(self, store: ModelStore, *, provider: Provider, threads: int) -> None:
        self.store, self.provider, self.threads = store, provider, threads
        self.cores = len(os.sched_getaffinity(0))
        self._shared: LoadedVersion | None = None
        self._own: list[LoadedVersion] = []

    def _load(self, threads: int) -> LoadedVersion:
        return load_version(
            self.store, None, provider=self.provider, intra_threads=threads, inter_threads=1
        )

    def one_call_at_a_time(
        self, workload: Workload, *, clients: int, seconds: float
    ) -> Measurement:
        self._shared = self._shared or self._load(self.threads)
        # A GPU call's time is mostly fixed: every client's request in one call.
        rows = CEILING_ROWS if self._shared.provider == "cpu" else sys.maxsize
        calls = direct_calls(self._shared, workload, ceiling_width(workload, clients, rows))
        graph = self._shared.markets[workload.market].graph
        run = time_direct_calls(graph, calls, seconds, CEILING)
        return replace(run, requests=requests_scored(calls, run.requests))  # not its calls

    def caller_per_core(self, workload: Workload, *, clients: int, seconds: float) -> Measurement:
        self._own = self._own or [self._load(1) for _ in range(self.cores)]
        width = ceiling_width(workload, math.ceil(clients / self.cores))
        calls = direct_calls(self._own[0], workload, width)
        graphs = [own.markets[workload.market].graph for own in self._own]
        made = [0] * len(graphs)
        stop = math.inf  # set once every caller is ready to start
        for graph in graphs:  # untimed: first-call allocations are not scoring speed
            graph.score(calls[0].history, calls[0].candidates, calls[0].market)

        def caller(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                one = calls[i % len(calls)]
                graphs[k].score(one.history, one.candidates, one.market)  # releases the GIL
                made[k] += 1
                i += len(graphs)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(len(graphs))]
        cpu, start = time.process_time(), time.perf_counter()
        stop = start + seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        scored = sum(
            calls[(k + j * len(graphs)) % len(calls)].scored
            for k in range(len(graphs))
            for j in range(made[k])
        )
        requests = sum(requests_scored(calls, made[k], k, len(graphs)) for k in range(len(graphs)))
        return Measurement(CEILING, requests, scored, elapsed, [], cpu)

    def measure(
        self, workload: Workload, *, clients: int, seconds: float
    ) -> tuple[Measurement, str]:
        """The better of the ways (on a GPU there is one), and which it was."""
        self._shared = self._shared or self._load(self.threads)
        ways = {"one call at a time": self.one_call_at_a_time}
        if self._shared.provider == "cpu":  # a caller per core is a CPU's way, not a GPU's
            ways[f"{self.cores} callers of one thread"] = self.caller_per_core
        runs = {way: run(workload, clients=clients, seconds=seconds) for way, run in ways.items()}
        best = max(runs, key=lambda way: runs[way].candidates_per_s)
        return runs[best], ", ".join(f"{w} {r.candidates_per_s:,.0f}" for w, r in runs.items())
