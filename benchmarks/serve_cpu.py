"""Where the CPU goes while the service is under the `python -m benchmarks.serve` load.

Starts the service (batching on, the store's current version), gives it the bench's
users, drives it with the bench's clients, and reads from /proc how many cores each
of its threads, the load generator (this process) and Redis used meanwhile; then
the batch statistics from the service's own /metrics. This explains the serve
bench's share of the ceiling: which thread is busy, and how much CPU sits idle.

    .venv/bin/python -m benchmarks.serve_cpu --store runs/store \
        --redis-url redis://localhost:6390/0 [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from benchmarks.processes import running_service
from benchmarks.workload import drive, make_workload, post_histories
from model_store.store import ModelStore

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def thread_seconds(pid: int) -> dict[str, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        out[tid] = cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
    return out


def redis_pid(port: int) -> int | None:
    """The redis-server serving ``port``, if it runs on this machine."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"redis-server" in cmdline and f":{port}".encode() in cmdline:
            return int(pid)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--redis-url", default="redis://localhost:6379/0")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    workload = make_workload(ModelStore(args.store), None, 256, args.candidates)
    redis = redis_pid(urlsplit(args.redis_url).port or 6379)
    with running_service(args.store, args.redis_url, args.port, True, 0, "auto") as service:
        url, pid = service.url, service.pid
        asyncio.run(post_histories(url, workload))
        asyncio.run(drive(url, workload, args.clients, 2.0, "warm-up"))  # threads exist now
        before_threads, before_self = thread_seconds(pid), sum(os.times()[:2])
        before_redis = cpu_seconds(f"/proc/{redis}/stat") if redis else 0.0
        before_metrics = httpx.get(f"{url}/metrics").text
        start = time.perf_counter()
        run = asyncio.run(drive(url, workload, args.clients, args.seconds, "measured"))
        wall = time.perf_counter() - start
        after_threads, after_self = thread_seconds(pid), sum(os.times()[:2])
        after_redis = cpu_seconds(f"/proc/{redis}/stat") if redis else 0.0
        after_metrics = httpx.get(f"{url}/metrics").text

    def metric(text: str, name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def delta(name: str) -> float:
        return metric(after_metrics, name) - metric(before_metrics, name)

    print(f"{run.requests / run.seconds:,.0f} requests/s, {run.candidates_per_s:,.0f} candidates/s")
    print(f"cores available: {len(os.sched_getaffinity(0))}")
    busy = {t: (after_threads[t] - before_threads.get(t, 0.0)) / wall for t in after_threads}
    main_thread = busy.pop(str(pid), 0.0)
    print(f"service event loop (main thread): {main_thread:.2f} cores")
    for tid, cores in sorted(busy.items(), key=lambda kv: -kv[1]):
        if cores >= 0.01:
            print(f"service thread {tid}: {cores:.2f} cores")
    print(f"load generator: {(after_self - before_self) / wall:.2f} cores")
    if redis:
        print(f"redis-server: {(after_redis - before_redis) / wall:.2f} cores")
    calls = delta("cmr_inference_seconds_count")
    waited = delta("cmr_queue_wait_seconds_sum")
    if calls:
        print(
            f"scoring calls: {calls:.0f}, {delta('cmr_batch_requests_sum') / calls:.1f} requests "
            f"each, {1000 * delta('cmr_inference_seconds_sum') / calls:.1f} ms each; "
            f"queue wait {1000 * waited / delta('cmr_queue_wait_seconds_count'):.1f} ms per request"
        )


if __name__ == "__main__":
    main()
