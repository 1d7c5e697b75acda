"""The service under concurrent clients, against its model-bound ceiling.

In one round: start the service (a ``python -m service`` process) with batching on,
then off; give users histories through ``POST /events``; let ``clients`` concurrent
clients send recommendation requests of ``candidates`` candidates each for
``seconds``; then call the same graph directly, in the bench process, on the same
requests grouped ``clients`` at a time: the most the model alone can do. Throughput is
candidates scored per second; latency percentiles are per request as the clients saw
them. Rounds repeat the three runs; the table gives each run's median over rounds and
its share of the ceiling measured in the same round (shared machines drift).

    python -m benchmarks.serve --store runs/store --redis-url redis://localhost:6390/0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from benchmarks.ceiling import Ceiling
from benchmarks.processes import running_service
from benchmarks.workload import (
    Measurement,
    drive,
    make_workload,
    measurement_table,
    post_histories,
)
from model_store.manifest import StoreError
from model_store.store import ModelStore
from service.sessions import Provider


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
    top = Ceiling(store, provider=provider, threads=threads)
    results = []
    for _ in range(rounds):
        one = []
        for batching in (True, False):
            with running_service(store_root, redis_url, port, batching, threads, provider) as svc:
                asyncio.run(post_histories(svc.url, workload))
                name = f"service, batching {'on' if batching else 'off'}"
                one.append(asyncio.run(drive(svc.url, workload, clients, seconds, name)))
        one.append(top.one_call_at_a_time(workload, clients=clients, seconds=seconds))
        results.append(one)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1],
    )
    add = parser.add_argument
    add("--store", type=Path, required=True, help="model store folder")
    add(
        "--redis-url",
        default="redis://localhost:6379/0",
        help="a Redis the bench may write users into (default: %(default)s)",
    )
    add("--clients", type=int, default=32, help="concurrent clients (default: %(default)s)")
    add("--candidates", type=int, default=200, help="candidates per request (default: %(default)s)")
    add("--seconds", type=float, default=10.0, help="seconds of each run (default: %(default)s)")
    add(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime threads per call; 0 (default) = the service's default split",
    )
    add(
        "--provider",
        choices=get_args(Provider),
        default="auto",
        help="execution provider (default: %(default)s)",
    )
    add(
        "--port",
        type=int,
        default=8765,
        help="port for the service processes (default: %(default)s)",
    )
    add(
        "--rounds",
        type=int,
        default=3,
        help="rounds of on / off / ceiling; the table gives medians (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        results = bench_serve(
            args.store, args.redis_url, args.clients, args.candidates, seconds=args.seconds,
            threads=args.threads, provider=args.provider, port=args.port, rounds=args.rounds,
        )  # fmt: skip
    except (StoreError, FileNotFoundError, ValueError, KeyError) as error:  # bad input
        parser.exit(2, f"error: {error}\n")
    print(measurement_table(results), end="")


if __name__ == "__main__":
    main()
