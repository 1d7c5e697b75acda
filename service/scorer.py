"""The scorer: concurrent requests share onnxruntime calls (batching).

Requests wait in one queue. ``workers`` threads each loop: take the oldest request,
add queued requests until the padded batch would exceed ``max_rows`` candidate rows
(by default ``DEFAULT_ROWS`` of the graph's provider) or the oldest has waited
``max_wait_s``, split the batch by graph (requests of
different markets share a call when one graph serves them, the market id being an
input), run one call per part and hand the scores back to the event loop. The
threads take their next batch themselves, so a worker never waits for the event
loop between calls, and onnxruntime never runs on the event loop. Without batching
a batch is one request. A row's scores do not depend on the other rows of its call,
so each request gets the ranking it would get alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model_store.vocab import IntArray, pad_rows
from service.errors import ScorerStopped
from service.graphs import Graph, MarketModel, Scores
from service.metrics import Metrics

# Candidate rows per call when the settings leave it open. On CPU a row costs more
# in a wide call, whose activations outgrow the cache (benchmarks/call_width.py,
# docs/benchmarks.md); a GPU wants wide calls.
DEFAULT_ROWS = {"cpu": 1_024, "cuda": 65_536}


@dataclass
class _Job:
    graph: Graph
    history: IntArray  # (N,) item indices, oldest first, no padding
    candidates: IntArray  # (C,)
    market: int
    future: asyncio.Future[Scores]
    enqueued: float = field(default_factory=time.perf_counter)


class BatchingScorer:
    def __init__(
        self,
        metrics: Metrics,
        *,
        max_rows: int,
        max_wait_s: float,
        enabled: bool,
        workers: int = 1,
    ) -> None:
        """``max_rows`` 0: the default of the graph's provider."""
        self.metrics = metrics
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        self.workers = workers
        self._jobs: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    async def start(self) -> None:
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"onnxruntime_{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Finish the calls under way; fail the requests still queued."""
        with self._changed:
            self._stopping = True
            left = list(self._jobs)
            self._jobs.clear()
            self._changed.notify_all()
        for job in left:
            if not job.future.done():
                job.future.set_exception(ScorerStopped("the scorer stopped"))
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    async def score(self, history: IntArray, candidates: IntArray, market: MarketModel) -> Scores:
        """Scores of ``candidates`` for one user of ``market``, in their order; raises
        ``ScoringFailed`` when the call fails, ``ScorerStopped`` when shutting down."""
        future = asyncio.get_running_loop().create_future()
        job = _Job(market.graph, history, candidates, market.index, future)
        with self._changed:
            if self._stopping:
                raise ScorerStopped("the scorer stopped")
            self._jobs.append(job)
            self._changed.notify()
        return await job.future

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            self._run(batch)

    def _take(self) -> list[_Job] | None:
        """The next batch (None once stopping): blocks for the first request, then
        gathers until the batch is full or the oldest request's wait is over."""
        with self._changed:
            while not self._jobs:
                if self._stopping:
                    return None
                self._changed.wait()
            batch = [self._jobs.popleft()]
            if not self.enabled:
                return batch
            width = len(batch[0].candidates)
            max_rows = self.max_rows or DEFAULT_ROWS[batch[0].graph.provider]
            deadline = batch[0].enqueued + self.max_wait_s
            while True:
                while self._jobs:
                    new_width = max(width, len(self._jobs[0].candidates))
                    if (len(batch) + 1) * new_width > max_rows:  # padded candidate rows
                        return batch  # full: the next request starts the next batch
                    batch.append(self._jobs.popleft())
                    width = new_width
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._stopping:
                    return batch
                self._changed.wait(remaining)

    def _run(self, batch: list[_Job]) -> None:
        """Score ``batch`` in this worker thread, one call per graph."""
        groups: dict[int, list[_Job]] = defaultdict(list)
        for job in batch:
            groups[id(job.graph)].append(job)
        for jobs in groups.values():
            jobs = [j for j in jobs if not j.future.done()]  # cancelled by their clients
            if not jobs:
                continue
            start = time.perf_counter()
            for job in jobs:
                self.metrics.queue_wait.observe(start - job.enqueued)
            try:
                scores = score_call(
                    jobs[0].graph,
                    histories=[j.history for j in jobs],
                    candidates=[j.candidates for j in jobs],
                    markets=[j.market for j in jobs],
                )
            except Exception as e:  # ScoringFailed or a bug: fails its requests, never the thread
                _deliver(jobs, e)
                continue
            self.metrics.inference.observe(time.perf_counter() - start)
            self.metrics.batch_requests.observe(len(jobs))
            self.metrics.batch_rows.observe(len(jobs) * max(len(j.candidates) for j in jobs))
            _deliver(jobs, scores)


def score_call(
    graph: Graph,
    *,
    histories: Sequence[IntArray],
    candidates: Sequence[IntArray],
    markets: Sequence[int],
) -> list[Scores]:
    """One call of ``graph`` for requests that share it: their inputs padded into
    (B, N), (B, C) and (B,), and each request's own scores back, in its candidates'
    order (a row's scores do not depend on the other rows)."""
    scores = graph.score(
        pad_rows(histories), pad_rows(candidates), np.array(markets, dtype=np.int64)
    )
    return [scores[row, : len(c)].astype(np.float32) for row, c in enumerate(candidates)]


def _deliver(jobs: list[_Job], outcome: list[Scores] | Exception) -> None:
    """Hand a call's outcome to the event loop(s) its requests wait on: one wake-up per
    loop, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        by_loop[job.future.get_loop()].append(i)

    def settle(rows: list[int]) -> None:
        for i in rows:
            future = jobs[i].future
            if future.done():  # its client went away
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome[i])

    for loop, rows in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, rows)
