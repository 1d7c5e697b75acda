"""Service settings side by side under the `python -m benchmarks.serve` load, interleaved.

Each setting is a comma-separated list of CMR_* variables for the service process
("" is the defaults). In each round every setting runs once (batching as the
setting says, 32 clients x 200 candidates for ``--seconds``), then the ceiling;
each run's share is taken against its round's ceiling, and the medians printed.
Interleaving keeps a drifting, shared machine from favouring one setting.

    .venv/bin/python -m benchmarks.serve_settings --store runs/store \
        --redis-url redis://localhost:6390/0 "" CMR_MAX_BATCH_ROWS=65536
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
from pathlib import Path

from benchmarks.ceiling import Ceiling
from benchmarks.processes import running_service
from benchmarks.workload import drive, make_workload, post_histories
from model_store.store import ModelStore


def parse(setting: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in setting.split(",") if p]
    if any(len(p) != 2 or not p[0].startswith("CMR_") for p in pairs):
        raise SystemExit(f"not CMR_NAME=value[,...]: {setting!r}")
    return dict(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--redis-url", default="redis://localhost:6379/0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("settings", nargs="+", help='e.g. "" CMR_MAX_BATCH_ROWS=65536')
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = [parse(s) for s in args.settings]
    store = ModelStore(args.store)
    ceiling = Ceiling(store, provider="cpu", threads=0)
    workload = make_workload(store, None, 256, 200)
    shares: list[list[float]] = [[] for _ in settings]
    for round_ in range(args.rounds):
        rates = []
        for env in settings:
            before = dict(os.environ)
            os.environ.update(env)  # the service process inherits them
            try:
                batching = env.get("CMR_BATCHING", "true") != "false"
                with running_service(
                    args.store, args.redis_url, args.port, batching, 0, "cpu"
                ) as svc:
                    asyncio.run(post_histories(svc.url, workload))
                    run = asyncio.run(drive(svc.url, workload, 32, args.seconds, "service"))
            finally:
                os.environ.clear()
                os.environ.update(before)
            rates.append(run.candidates_per_s)
        top = ceiling.one_call_at_a_time(workload, clients=32, seconds=args.seconds)
        for i, rate in enumerate(rates):
            shares[i].append(rate / top.candidates_per_s)
        got = ", ".join(f"{r / top.candidates_per_s:.0%}" for r in rates)
        print(f"round {round_ + 1}: {got}", flush=True)
    print("| setting | share of the ceiling, median | rounds |")
    print("|---|---|---|")
    for setting, share in zip(args.settings, shares, strict=True):
        print(f"| {setting or '(defaults)'} | {statistics.median(share):.0%} | {len(share)} |")


if __name__ == "__main__":
    main()
