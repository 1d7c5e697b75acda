"""A soak: the service at a fixed share of its saturation rate, for many minutes.

Starts the service, gives users of every market histories, warms it up, measures
saturation (8 closed-loop clients), then sends the same mix open loop at ``--share``
of that rate: requests start on a fixed schedule, so a slowing service shows as
latency and late sends, not as a lower rate. Every ``--interval`` s: the service's
RSS, requests, non-200 replies and latency into OUT/soak.csv; at the end OUT/soak.png
and OUT/soak.md. The mix: 20% POST /events (1..50 events), 80% recommend requests.

    .venv/bin/python -m benchmarks.soak --store /work/stores/real \
        --redis-url redis://127.0.0.1:6402/0 --minutes 30 --out docs/results/soak
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import math
import os
import random
import shlex
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from benchmarks.processes import API_KEY, running_service
from benchmarks.workload import Client, make_workload, post_histories
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from model_store.vocab import Vocabulary

USERS = 500  # per market, given a history; recommend asks for 25% more (who have none)
EVENT_SHARE = 0.2
WHOLE_SHARE = 0.5  # of recommend requests: no candidates, the whole catalogue is ranked
SATURATION_CLIENTS = 8
WARMUP_S = 5.0
LATE_S = 0.01  # sent this long after its scheduled time: late


class Mix:
    """The requests, each made when it is needed (fresh event ids), from one seed."""

    def __init__(self, store: ModelStore, seed: int = 0) -> None:
        version = store.open()
        vocab = Vocabulary.load(version.file(version.manifest.items))
        catalogues = load_catalogues(version.file(version.manifest.catalogues))
        self.random = random.Random(seed)
        self.items = {m: [vocab.item(int(i)) for i in c.items] for m, c in catalogues.items()}
        for items in self.items.values():  # candidates are a run of this order: no repeats
            self.random.shuffle(items)
        self.markets = sorted(self.items)
        self.tag = f"soak-{time.time_ns()}"  # event ids fresh across runs on one Redis too
        self.serial = itertools.count()

    def event(self) -> dict[str, str]:
        market = self.random.choice(self.markets)
        user, item = f"bench-{self.random.randrange(USERS)}", self.random.choice(self.items[market])
        event_id = f"{self.tag}-{next(self.serial)}"
        return {"market": market, "user_id": user, "item_id": item, "event_id": event_id}

    def next(self) -> tuple[str, bytes]:
        r = self.random
        if r.random() < EVENT_SHARE:
            events = [self.event() for _ in range(r.randint(1, 50))]
            return "/events", json.dumps({"events": events}).encode()
        market = r.choice(self.markets)
        body: dict[str, object] = {"user_id": f"bench-{r.randrange(USERS * 5 // 4)}", "k": 10}
        if r.random() >= WHOLE_SHARE:
            items, start = self.items[market], r.randrange(len(self.items[market]))
            n = min(len(items), round(math.exp(r.uniform(math.log(10), math.log(1000)))))
            body["candidates"] = (items[start:] + items[:start])[:n]
        return f"/markets/{market}/recommend", json.dumps(body).encode()


async def closed_loop(url: str, mix: Mix, seconds: float) -> tuple[float, int]:
    """200 replies/s and the other replies of clients that send once their last is answered."""
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + seconds

    async def client() -> None:
        one = Client(url, api_key=API_KEY)
        while time.perf_counter() < stop:
            statuses[(await one.send(*mix.next()))[0]] += 1
        one.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(SATURATION_CLIENTS)))
    return statuses[200] / (time.perf_counter() - start), statuses.total() - statuses[200]


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    except (OSError, IndexError):  # the service is gone
        return math.nan


def ms(latencies: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(latencies, q)) * 1000 if len(latencies) else math.nan


@dataclass
class Window:
    """One interval: sends count in the one they were sent in, replies in the one they came."""

    sent: int = 0
    late: int = 0
    latencies: list[float] = field(default_factory=list)  # s
    statuses: Counter[int] = field(default_factory=Counter)
    minutes: float = 0.0  # into the soak, at the interval's end
    rss_mb: float = math.nan  # then


@dataclass
class Soak:
    windows: list[Window] = field(default_factory=list)
    seconds: float = 0.0
    exit_code: int | None = None  # the service's, had it died


async def soak(
    url: str, service: subprocess.Popen[bytes], mix: Mix, rate: float, seconds: float,
    args: argparse.Namespace, out: TextIO,
) -> Soak:  # fmt: skip
    """``rate`` requests/s for ``seconds``, at most ``args.in_flight`` out at once."""
    result, window = Soak(), Window()
    idle: asyncio.Queue[Client] = asyncio.Queue()
    for _ in range(args.in_flight):
        idle.put_nowait(Client(url, api_key=API_KEY))
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    stop = start + seconds

    async def one(client: Client, path: str, payload: bytes) -> None:
        sent = time.perf_counter()
        status, _ = await client.send(path, payload)
        window.latencies.append(time.perf_counter() - sent)
        window.statuses[status] += 1
        idle.put_nowait(client)

    async def schedule() -> None:
        for i in itertools.count():
            due = start + i / rate
            if due >= stop:
                return
            request = mix.next()  # made before its time comes
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            client = await idle.get()  # waits only while ``in_flight`` are out
            window.sent += 1
            window.late += time.perf_counter() - due > LATE_S
            task = asyncio.create_task(one(client, *request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    writer = csv.writer(out)
    writer.writerow(["minutes", "rss_mb", "sent", "replies", "non200", "late", "p50_ms", "p99_ms"])
    scheduler = asyncio.create_task(schedule())
    for tick in itertools.count(1):
        await asyncio.sleep(max(0.0, start + tick * args.interval - time.perf_counter()))
        result.exit_code = service.poll()
        if result.exit_code is not None:
            scheduler.cancel()  # what is out fails fast now
        elif time.perf_counter() >= stop:
            await scheduler
            await asyncio.gather(*tasks)  # the last replies belong to the last interval
        seen, window = window, Window()
        seen.minutes, seen.rss_mb = (time.perf_counter() - start) / 60, rss_mb(service.pid)
        result.windows.append(seen)
        lat, non200 = seen.latencies, seen.statuses.total() - seen.statuses[200]
        p50, p99 = ms(lat, 50), ms(lat, 99)
        row = [seen.minutes, seen.rss_mb, seen.sent, len(lat), non200, seen.late, p50, p99]
        writer.writerow(f"{v:.3f}" if isinstance(v, float) else v for v in row)
        out.flush()  # a crash loses nothing
        line = f"{seen.minutes:5.2f} min: RSS {seen.rss_mb:.1f} MB, sent {seen.sent}, non-200 "
        print(line + f"{non200}, late {seen.late}, p50/p99 {p50:.1f}/{p99:.1f} ms")
        if result.exit_code is not None or (scheduler.done() and not tasks):
            break
    result.seconds = time.perf_counter() - start
    return result


def plot(result: Soak, first: float, end: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    w = result.windows
    minutes = [x.minutes for x in w]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(minutes, [x.rss_mb for x in w], marker=".", label="service RSS")
    top.axhline(first, color="tab:gray", ls="--", label=f"after 1 min: {first:.1f} MB")
    top.axhline(end, color="tab:red", ls=":", label=f"at the end: {end:.1f} MB")
    top.set_ylabel("RSS (MB)")
    for q in (50, 99):
        bottom.plot(minutes, [ms(x.latencies, q) for x in w], marker=".", label=f"p{q}")
    bottom.set(ylabel="latency (ms)", xlabel="minutes into the soak", ylim=(0, None))
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
        axis.legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(args: argparse.Namespace, saturation: float, rate: float, start_rss: float,
            result: Soak) -> tuple[str, float, float]:  # fmt: skip
    """The markdown summary; the RSS after the first minute and at the end."""
    read = [w for w in result.windows if not math.isnan(w.rss_mb)]  # nan: the service died
    rss, minutes = np.array([w.rss_mb for w in read]), np.array([w.minutes for w in read])
    first = float(rss[np.argmax(minutes >= 1)] if (minutes >= 1).any() else rss[-1])
    half = minutes >= minutes[-1] / 2
    slope = float(np.polyfit(minutes[half], rss[half], 1)[0]) if half.sum() >= 2 else math.nan
    latencies = [t for w in result.windows for t in w.latencies]
    last = [t for w in result.windows if w.minutes > result.seconds / 60 - 5 for t in w.latencies]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in cpuinfo if x.startswith("model name")), "?")
    statuses = sum((w.statuses for w in result.windows), Counter[int]())
    failed = statuses.total() - statuses[200]
    others = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()) if s != 200)
    rows = [
        (f"saturation ({SATURATION_CLIENTS} closed-loop clients, {args.saturation_seconds:g} s)",
         f"{saturation:.1f} req/s"),
        ("rate (open loop)", f"{rate:.1f} req/s, at most {args.in_flight} in flight"),
        ("minutes", f"{result.seconds / 60:.1f}"),
        ("requests", f"{sum(w.sent for w in result.windows)} "
         f"({sum(w.late for w in result.windows)} sent over {LATE_S * 1000:.0f} ms late)"),
        ("non-200", f"{failed}" + (f" ({others}; 0: no reply)" if others else "")),
        (f"RSS at start (after histories and {WARMUP_S:g} s of load)", f"{start_rss:.1f} MB"),
        ("RSS after the first minute", f"{first:.1f} MB"),
        ("RSS at the end", f"{rss[-1]:.1f} MB"),
        ("growth, first minute to end", f"{100 * (rss[-1] - first) / first:+.1f}%"),
        ("max RSS", f"{np.nanmax(rss):.1f} MB"),
        ("RSS slope, last half", f"{slope:+.2f} MB/min"),
        ("latency p50 / p99, all", f"{ms(latencies, 50):.1f} / {ms(latencies, 99):.1f} ms"),
        ("latency p50 / p99, last 5 minutes", f"{ms(last, 50):.1f} / {ms(last, 99):.1f} ms"),
    ]  # fmt: skip
    lines = [
        f"# Soak: {args.minutes:g} minutes at {args.share:.0%} of saturation", "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {len(os.sched_getaffinity(0))} cores (nproc), {cpu}",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- model: {args.store}, version {ModelStore(args.store).current()}",
        "- mix: 20% POST /events (1..50 events), 80% recommend (half the whole catalogue, half "
        "10..1000 candidates), all markets; latency from send to reply",
        *([] if result.exit_code is None else [f"- **service exited: {result.exit_code}**"]),
        "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows),
    ]  # fmt: skip
    return "\n".join(lines) + "\n", first, float(rss[-1])


def main() -> None:
    kind = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=kind)
    add = parser.add_argument
    add("--store", type=Path, required=True, help="model store; its current version is served")
    add("--redis-url", default="redis://localhost:6379/0", help="the service's; gets test data")
    add("--minutes", type=float, default=30.0, help="length of the soak")
    add("--share", type=float, default=0.5, help="soak rate as a share of the saturation rate")
    add("--saturation-seconds", type=float, default=30.0, help="length of the saturation run")
    add("--interval", type=float, default=10.0, help="seconds between samples")
    add("--in-flight", type=int, default=64, help="connections: most requests out at once")
    add("--port", type=int, default=8767, help="port for the service")
    add("--out", type=Path, required=True, help="folder for soak.csv, soak.png, soak.md")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, as it comes
    args.out.mkdir(parents=True, exist_ok=True)
    store = ModelStore(args.store)
    mix = Mix(store)
    with running_service(args.store, args.redis_url, args.port, provider="auto") as service:
        for seed, market in enumerate(mix.markets):  # USERS users with a history per market
            asyncio.run(post_histories(service.url, make_workload(store, market, USERS, 10, seed)))
        asyncio.run(closed_loop(service.url, mix, WARMUP_S))
        start_rss = rss_mb(service.pid)
        print(f"service ready, histories given, warmed up: RSS {start_rss:.1f} MB")
        saturation, failed = asyncio.run(closed_loop(service.url, mix, args.saturation_seconds))
        rate = args.share * saturation
        print(f"saturation {saturation:.1f} req/s ({failed} non-200); soak at {rate:.1f} req/s")
        with (args.out / "soak.csv").open("w", newline="") as out:
            result = asyncio.run(
                soak(service.url, service.process, mix, rate, args.minutes * 60, args, out)
            )
        if result.exit_code is not None:
            print(service.log_text()[-3000:], file=sys.stderr)
    text, first, end = summary(args, saturation, rate, start_rss, result)
    (args.out / "soak.md").write_text(text)
    share = f"{args.share:.0%} of saturation ({saturation:.1f} req/s)"
    title = f"Soak: {rate:.1f} req/s = {share}, {result.seconds / 60:.0f} min"
    plot(result, first, end, title, args.out / "soak.png")
    print(text)


if __name__ == "__main__":
    main()
