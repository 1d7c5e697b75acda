"""The service against real peers, interleaved round by round on the same workload.

In each round every run happens once, for every workload at every client count: the
graph called directly in this process (the ceiling: the better of two ways of calling
it, benchmarks/ceiling.py), the service with batching on and off, the same recommend
endpoint under Ray Serve with ``@serve.batch`` (benchmarks/ray_peer.py) and a no-op
FastAPI endpoint (the HTTP floor, benchmarks/noop_peer.py). Each server is started
for its runs and stopped after them; the order of the runs turns by one each round,
so no run always comes first or last. All use one store, one Redis, the same users
and histories (posted once, through the service's ``POST /events``) and the same
candidates. Workloads: ``given``, 200 candidates sent with each request; ``whole``,
none sent, so the largest market's whole catalogue is ranked. Before any server's
timed runs, the top-k items it gives a sample of users are checked against the
service's: a mismatch stops the bench. Prints one markdown table
(benchmarks/comparison.py), progress on stderr. Needs ``pip install -e '.[bench]'``.

    python -m benchmarks.compare --store runs/store --redis-url redis://localhost:6390/0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import httpx
import redis

from benchmarks.ceiling import Ceiling
from benchmarks.comparison import CEILING, Case, Results, comparison_table, requests_per_s
from benchmarks.peers import NO_OP, RAY_SERVE, SERVICE_OFF, SERVICE_ON, Peer, make_peers
from benchmarks.processes import NotReady
from benchmarks.workload import (
    Measurement,
    Workload,
    catalogue_items,
    drive,
    make_workload,
    post_histories,
    whole_catalogue,
)
from model_store.manifest import StoreError
from model_store.store import ModelStore
from service.history import user_tag
from service.sessions import Provider

ORDER = (CEILING, SERVICE_ON, SERVICE_OFF, RAY_SERVE, NO_OP)  # the table's rows per case
RUNS = dict(zip(("ceiling", "on", "off", "ray", "noop"), ORDER, strict=True))  # --runs names
WORKLOADS = ("given", "whole")


class NotEqualWork(RuntimeError):
    """A server ranks the sample users differently from the service."""


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def make_workloads(
    store: ModelStore, names: Sequence[str], *, users: int, candidates: int
) -> dict[str, Workload]:
    """By the table's name for each: ``given``, ``candidates`` sent per request;
    ``whole``, the same users and histories ranking the largest market's whole
    catalogue."""
    given = make_workload(store, None, users, candidates)
    market, catalogue = catalogue_items(store, given.market)
    whole = whole_catalogue(given, catalogue)
    made = {
        "given": (f"{candidates:,} candidates", given),
        "whole": (f"whole {market} catalogue ({len(catalogue):,})", whole),
    }
    return dict(made[name] for name in names)


def clear_histories(redis_url: str, workload: Workload) -> None:
    """Drop the bench users' histories (the service's keys) left by an earlier run: the
    bench posts them once, and a second post would append to them."""
    keys = [f"{user_tag(workload.market, user)}:h" for user in workload.users]
    with redis.Redis.from_url(redis_url) as client:
        client.delete(*keys)


def top_items(url: str, workload: Workload, users: int) -> list[list[str]]:
    """The item ids each of the first ``users`` users gets, best first."""
    got = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for body in workload.bodies()[:users]:
            reply = http.post(f"/markets/{workload.market}/recommend", json=body)
            reply.raise_for_status()
            got.append([item["item_id"] for item in reply.json()["items"]])
    return got


def check_same(
    peer: str, *, got: list[list[str]], reference: list[list[str]], workload: Workload
) -> None:
    """Stop unless ``peer`` gave every sample user the service's top items, in order."""
    for user, mine, theirs in zip(workload.users[: len(got)], got, reference, strict=True):
        if mine != theirs:
            raise NotEqualWork(
                f"{peer} ranks user {user} of market {workload.market} differently from the "
                f"service ({'whole catalogue' if workload.whole else 'given candidates'}):\n"
                f"  {peer}: {mine}\n  service: {theirs}\n"
                "so it does not do the service's work; the comparison stops here."
            )


def check(
    peer: str, url: str, workloads: list[Workload], reference: dict[int, list[list[str]]],
    *, users: int,
) -> None:  # fmt: skip
    """The first server checked (the service) sets each workload's reference top items;
    every later one must give the same."""
    for workload in workloads:
        got = top_items(url, workload, users)
        if id(workload) in reference:
            check_same(peer, got=got, reference=reference[id(workload)], workload=workload)
        else:
            reference[id(workload)] = got


def bench_compare(
    *, store_root: Path, redis_url: str, rounds: int, seconds: float, clients: Sequence[int],
    workloads: Sequence[str], users: int = 256, candidates: int = 200, provider: Provider = "auto",
    threads: int = 0, ray_replicas: int = 0, check_users: int = 16,
    runs: Sequence[str] = ORDER, service_replicas: int = 1,
) -> Results:  # fmt: skip
    """Every run of every round (the module's docstring); ``ray_replicas`` 0: one per core.
    ``runs``: the names (``ORDER``) of the runs to make; at least one of the service's."""
    if SERVICE_ON not in runs and SERVICE_OFF not in runs:
        raise ValueError("the service gives the users their histories: run it on or off")
    store = ModelStore(store_root)
    loads = make_workloads(store, workloads, users=users, candidates=candidates)
    cases = [(Case(name, c), w) for name, w in loads.items() for c in clients]
    first = next(iter(loads.values()))
    clear_histories(redis_url, first)
    replicas = ray_replicas or len(os.sched_getaffinity(0))  # 0: one per core
    servers = make_peers(
        store_root, redis_url, provider=provider, threads=threads, ray_replicas=replicas,
        service_replicas=service_replicas,
    )  # fmt: skip
    peers: list[Peer | None] = [p for p in servers if p.name in runs]
    if CEILING in runs:
        peers.append(None)  # None: the ceiling
    ceiling = Ceiling(store, provider=provider, threads=threads)
    reference: dict[int, list[list[str]]] = {}  # id(workload) -> the service's top items
    posted = False
    results = Results()
    for r in range(rounds):
        turn = r % len(peers)  # round 1 starts with the service: it posts the histories
        for peer in peers[turn:] + peers[:turn]:
            if peer is None:
                for case, workload in cases:
                    run, ways = ceiling.measure(workload, clients=case.clients, seconds=seconds)
                    results.add(case, run)
                    report(r, rounds, case, run, f" (the better of: {ways})")
                continue
            progress(f"round {r + 1}/{rounds}: starting {peer.name}")
            with peer.start() as urls:
                if not posted:
                    assert peer.takes_events, "the first run of round 1 is the service's"
                    asyncio.run(post_histories(urls[0], first))  # one Redis for every replica
                    posted = True
                if peer.ranks:
                    check(peer.name, urls[0], list(loads.values()), reference, users=check_users)
                for case, workload in cases:
                    run = asyncio.run(drive(urls, workload, case.clients, seconds, peer.name))
                    results.add(case, run)
                    report(r, rounds, case, run)
    return results


def report(r: int, rounds: int, case: Case, run: Measurement, note: str = "") -> None:
    p99 = f", p99 {run.percentile(99):.1f} ms" if run.latencies else ""
    progress(
        f"round {r + 1}/{rounds}: {run.name}, {case.workload} x {case.clients}: "
        f"{requests_per_s(run):,.0f} requests/s, {run.candidates_per_s:,.0f} candidates/s"
        f"{p99}{note}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1],
    )
    add = parser.add_argument
    add("--store", type=Path, required=True, help="model store folder")
    add("--redis-url", required=True, help="a Redis the bench may write its users into")
    add("--rounds", type=int, default=3, help="rounds of every run (default: %(default)s)")
    add("--seconds", type=float, default=10.0, help="seconds of each run (default: %(default)s)")
    add("--clients", type=int, nargs="+", default=[8, 32], help="client counts (default: 8 32)")
    add(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="given: 200 candidates per request; whole: the largest market's whole "
        "catalogue (default: both)",
    )
    add("--users", type=int, default=256, help="users, one request each (default: %(default)s)")
    add(
        "--provider",
        choices=get_args(Provider),
        default="auto",
        help="execution provider of every run (default: %(default)s)",
    )
    add(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime threads per call; 0 (default): each server's own split of the cores",
    )
    cores = len(os.sched_getaffinity(0))
    add(
        "--ray-replicas",
        type=int,
        default=cores,
        help="Ray Serve replicas, one core each (default: one per core, %(default)s)",
    )
    add(
        "--check-users",
        type=int,
        default=16,
        help="users whose top-k every ranking server must match (default: %(default)s)",
    )
    add(
        "--runs",
        nargs="+",
        choices=list(RUNS),
        default=list(RUNS),
        help="which runs to make (default: all): the ceiling, the service with batching on "
        "and off, Ray Serve, the no-op floor; at least one of on and off",
    )
    add(
        "--replicas",
        type=int,
        default=1,
        help="service processes side by side, the clients dealt among them (default: 1)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or min(args.clients) < 1 or args.replicas < 1:
        parser.error("--rounds, --seconds, --clients and --replicas must be positive")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    try:
        results = bench_compare(
            store_root=args.store, redis_url=args.redis_url, rounds=args.rounds,
            seconds=args.seconds, clients=args.clients, workloads=args.workloads,
            users=args.users, provider=args.provider, threads=args.threads,
            ray_replicas=args.ray_replicas, check_users=args.check_users,
            runs=[RUNS[name] for name in args.runs], service_replicas=args.replicas,
        )  # fmt: skip
    except NotEqualWork as error:
        parser.exit(3, f"error: {error}\n")
    except (StoreError, FileNotFoundError, ValueError, KeyError, NotReady) as error:
        parser.exit(2, f"error: {error}\n")
    print(comparison_table(results, ORDER), end="")


if __name__ == "__main__":
    main()
