"""Recommend requests across a model version switch (scripts/loop.sh): does any fail?

A few keep-alive clients (benchmarks.workload.Client) each ask, one request after
another with a pause between, for the top 10 of a random real user of a random market
(users from a data folder; the whole catalogue is ranked), and record each reply's
status, model version and fallback. The version of the first reply is the old one;
once a reply carries another, that is the switch, and the clients go on for
``--after`` seconds more, then stop. SIGINT or SIGTERM stops them early. A reply other
than 200, or none within ``--timeout`` (status 0), is a failure. Exit code 0 only if
no request failed, the switch was seen, and no request sent after it got the old version.

    python -m benchmarks.loop_load --url http://127.0.0.1:8000 \\
        --data ../shared/data/xmarket-electronics --out load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.workload import Client
from training.market_files import read_logs

PROGRESS_S = 30.0


@dataclass(frozen=True)
class Reply:
    market: str
    sent: float  # epoch seconds
    seconds: float  # until the reply (or the failure)
    status: int  # 0: no HTTP reply
    version: str | None  # model_version of a 200
    fallback: str | None


@dataclass
class Switch:
    old: str | None = None  # the first reply's version
    new: str | None = None
    at: float | None = None  # when the first reply of ``new`` came, epoch seconds
    replies: list[Reply] = field(default_factory=list)


def clock(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S.%f")[:-3]


async def drive(
    url: str, users: dict[str, list[str]], *, clients: int, pause_s: float, after_s: float,
    timeout_s: float, seed: int, started: Path | None = None,
) -> Switch:  # fmt: skip
    """Run the clients until ``after_s`` past the switch, or a signal; the first reply's
    version is written into ``started``, for whoever is to make the switch."""
    switch = Switch()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    markets = sorted(users)

    def record(reply: Reply) -> None:
        switch.replies.append(reply)
        if reply.version is None:
            return
        if switch.old is None:
            switch.old = reply.version
            if started is not None:
                started.write_text(reply.version + "\n")
        elif switch.new is None and reply.version != switch.old:
            switch.new, switch.at = reply.version, reply.sent + reply.seconds
            loop.call_later(after_s, stop.set)

    async def client(n: int) -> None:
        rng = random.Random(seed + n)
        one = Client(url, timeout_s=timeout_s)
        try:
            while not stop.is_set():
                market = rng.choice(markets)
                body = {"user_id": rng.choice(users[market]), "k": 10}
                sent, start = time.time(), time.perf_counter()
                status, text = await one.send(
                    f"/markets/{market}/recommend", json.dumps(body).encode()
                )
                seconds = time.perf_counter() - start
                version = fallback = None
                if status == 200:
                    answer = json.loads(text)
                    version, fallback = answer["model_version"], answer["fallback"]
                record(Reply(market, sent, seconds, status, version, fallback))
                await asyncio.sleep(pause_s)
        finally:
            one.close()

    async def progress() -> None:
        while not stop.is_set():
            await asyncio.sleep(PROGRESS_S)
            replies = switch.replies
            failed = sum(r.status != 200 for r in replies)
            versions = Counter(r.version for r in replies if r.version)
            shown = ", ".join(f"{v} {n:,}" for v, n in versions.items())
            print(f"{clock(time.time())} load: {len(replies):,} requests, {failed} failed; {shown}")

    ticker = asyncio.create_task(progress())
    await asyncio.gather(*(client(n) for n in range(clients)))
    ticker.cancel()
    return switch


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q)) * 1000 if seconds else float("nan")


def summary(switch: Switch, wall_s: float) -> dict[str, Any]:
    replies = switch.replies
    statuses = Counter(r.status for r in replies)
    latencies = [r.seconds for r in replies if r.status == 200]
    done = [r.sent + r.seconds for r in replies]
    near = [  # replies that came within 10 s either side of the switch
        r.seconds for r, d in zip(replies, done, strict=True)
        if switch.at is not None and abs(d - switch.at) <= 10 and r.status == 200
    ]  # fmt: skip
    at = switch.at if switch.at is not None else float("inf")
    old = [(r, d) for r, d in zip(replies, done, strict=True) if r.version == switch.old]
    last = max(replies, key=lambda r: r.sent + r.seconds, default=None)
    return {
        "requests": len(replies),
        "failed": len(replies) - statuses[200],
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "versions": dict(Counter(r.version for r in replies if r.version)),
        "fallbacks": sum(r.fallback is not None for r in replies),
        "old": switch.old,
        "new": switch.new,
        "switch_at": switch.at,
        "switch_utc": clock(switch.at),
        # Requests the old version answered after the first reply of the new one: sent
        # before it (in flight across the swap), or after it (which would be a flip back).
        "old_answered_after_switch": sum(d > at for _, d in old),
        "old_sent_after_switch": sum(r.sent > at for r, _ in old),
        "last_version": last.version if last else None,
        "seconds": wall_s,
        "requests_per_s": len(replies) / wall_s if wall_s else 0.0,
        "latency_ms": {
            "p50": percentile_ms(latencies, 50),
            "p99": percentile_ms(latencies, 99),
            "max": max(latencies, default=0.0) * 1000,
            "max_within_10s_of_switch": max(near, default=0.0) * 1000,
        },
    }


def main() -> None:
    kind = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=kind)
    add = parser.add_argument
    add("--url", required=True, help="the service")
    add("--data", type=Path, required=True, help="data folder: its users are asked about")
    add("--clients", type=int, default=4, help="connections, each one request at a time")
    add("--pause", type=float, default=0.2, help="seconds a client waits after each reply")
    add("--after", type=float, default=20.0, help="seconds to go on after the switch")
    add("--timeout", type=float, default=30.0, help="seconds without a reply: a failure")
    add("--seed", type=int, default=0)
    add("--out", type=Path, required=True, help="JSON summary; every reply in OUT.replies.jsonl")
    add("--started", type=Path, help="file to write the first reply's version into")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, as it comes
    users = {log.market: sorted(set(log.users)) for log in read_logs(args.data)}
    print(f"{clock(time.time())} load: {args.clients} clients, users of {', '.join(users)}")
    start = time.perf_counter()
    switch = asyncio.run(
        drive(
            args.url, users, clients=args.clients, pause_s=args.pause, after_s=args.after,
            timeout_s=args.timeout, seed=args.seed, started=args.started,
        )
    )  # fmt: skip
    result = summary(switch, time.perf_counter() - start)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    with args.out.with_suffix(".replies.jsonl").open("w") as f:
        f.writelines(json.dumps(asdict(r)) + "\n" for r in switch.replies)
    versions = ", ".join(f"{v}: {n:,}" for v, n in result["versions"].items())
    lat = result["latency_ms"]
    print(
        f"load: {result['requests']:,} requests in {result['seconds']:.0f} s, failed (non-200 or "
        f"no reply) {result['failed']}; versions {versions}; switch {switch.old} -> "
        f"{switch.new} at {result['switch_utc']} UTC (old version's replies after it: "
        f"{result['old_answered_after_switch']}, of requests sent after it: "
        f"{result['old_sent_after_switch']}); latency p50 "
        f"{lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.0f} ms (within 10 s "
        f"of the switch {lat['max_within_10s_of_switch']:.0f} ms)"
    )
    good = result["failed"] == 0 and switch.new is not None and not result["old_sent_after_switch"]
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
