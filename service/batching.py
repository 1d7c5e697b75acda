"""The batching scorer: concurrent requests share onnxruntime calls.

Requests wait in a queue. A collector takes the oldest and keeps adding queued
requests until the padded batch would exceed ``max_rows`` candidate rows or the
oldest has waited ``max_wait_s``; the batch is split by graph (requests of
different markets share a call when one graph serves them, the market id being an
input) and each part is one call, run in a worker thread, never on the event loop.
While a call runs, the next batch gathers. A row's scores do not depend on the
other rows of its call, so each request gets the ranking it would get alone.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from model_store.vocab import IntArray, pad_histories
from service.graphs import Graph
from service.metrics import Metrics

Scores = NDArray[np.float32]


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
        self, metrics: Metrics, max_rows: int, max_wait_s: float, enabled: bool, workers: int = 1
    ) -> None:
        self.metrics = metrics
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        # ``workers`` calls may run at once, each in its own thread; a batch gathers
        # while every worker is busy.
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="onnxruntime")
        self._slots = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._collector: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.enabled:
            self._collector = asyncio.create_task(self._collect(), name="batching-scorer")

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        await asyncio.gather(*self._running, return_exceptions=True)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the scorer stopped"))
        self._executor.shutdown(wait=True)

    async def score(
        self, graph: Graph, history: IntArray, candidates: IntArray, market: int
    ) -> Scores:
        """Scores of ``candidates`` for one user, in their order."""
        job = _Job(graph, history, candidates, market, asyncio.get_running_loop().create_future())
        if self.enabled:
            await self._queue.put(job)
        else:
            await self._run([job])
        return await job.future

    def _dispatch(self, batch: list[_Job]) -> None:
        """Run ``batch`` on the worker whose slot the collector holds."""
        task = asyncio.create_task(self._run(batch))
        self._running.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._running.discard(done)
            self._slots.release()

        task.add_done_callback(finished)

    async def _collect(self) -> None:
        while True:
            # A free worker first, then the batch: requests that arrive while every
            # worker is busy join the next batch instead of waiting one call more.
            await self._slots.acquire()
            batch = [await self._queue.get()]
            width = len(batch[0].candidates)
            deadline = batch[0].enqueued + self.max_wait_s
            while True:
                if self._queue.empty():
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    job = self._queue.get_nowait()
                new_width = max(width, len(job.candidates))
                if (len(batch) + 1) * new_width > self.max_rows:  # padded candidate rows
                    self._dispatch(batch)  # full: this job starts the next batch
                    await self._slots.acquire()
                    batch, width = [job], len(job.candidates)
                    deadline = job.enqueued + self.max_wait_s
                    continue
                batch.append(job)
                width = new_width
            self._dispatch(batch)

    async def _run(self, batch: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = defaultdict(list)
        for job in batch:
            groups[id(job.graph)].append(job)
        loop = asyncio.get_running_loop()
        for jobs in groups.values():
            jobs = [j for j in jobs if not j.future.done()]  # cancelled by their clients
            if not jobs:
                continue
            start = time.perf_counter()
            for job in jobs:
                self.metrics.queue_wait.observe(start - job.enqueued)
            history = pad_histories([j.history for j in jobs])
            candidates = pad_histories([j.candidates for j in jobs])
            market = np.array([j.market for j in jobs], dtype=np.int64)
            try:
                scores = await loop.run_in_executor(
                    self._executor, jobs[0].graph.score, history, candidates, market
                )
            except Exception as e:  # a failed call fails its requests, not the scorer
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self.metrics.inference.observe(time.perf_counter() - start)
            self.metrics.batch_requests.observe(len(jobs))
            self.metrics.batch_rows.observe(candidates.size)
            for row, job in enumerate(jobs):
                if not job.future.done():
                    job.future.set_result(scores[row, : len(job.candidates)].astype(np.float32))
