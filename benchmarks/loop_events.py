"""The data side of the loop (scripts/loop.sh): a data folder's rows posted to the service
as a shop would, and the retraining data checked against the original.

``post``: the rows of ORIGINAL that OLD (``cmr data subset --drop-newest``) lacks are
"the day": posted through ``POST /events`` in time order, in batches, each event with an
id made from its market and its line in ORIGINAL and the row's own date as its
timestamp, so a batch answered 503 (or not at all) is sent again, safely. Before them,
unless ``--no-past``, OLD's rows give every user their history up to the day, posted
the same way; ``since_ms`` in the result is a Redis time after those and before the
day, for ``cmr events export --since``, so the export holds the day alone.

``check``: MERGED (OLD's rows plus the export's) against ORIGINAL, market by market, as
multisets of (user, item, timestamp): nothing lost, nothing doubled.

    python -m benchmarks.loop_events post --url http://127.0.0.1:8000 --api-key KEY \\
        --redis-url redis://127.0.0.1:6379/0 --data ORIGINAL --old OLD --out posted.json
    python -m benchmarks.loop_events check --data ORIGINAL --merged MERGED
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import httpx
import redis

from training.market_files import MarketLog, read_logs

BATCH = 1000  # events per POST /events: the most it takes
ATTEMPTS = 5  # per batch; a retry is safe, the event ids de-duplicate it


class Row(NamedTuple):
    market: str
    user: str
    item: str
    time: int  # epoch seconds
    line: int  # in its file, the header being line 1


def rows_of(log: MarketLog) -> list[Row]:
    if not log.has_time:
        raise ValueError(f"{log.path}: no timestamps, so there is no newest day to post")
    return [
        Row(log.market, u, i, t, n + 2)
        for n, (u, i, t) in enumerate(zip(log.users, log.items, log.times.tolist(), strict=True))
    ]


def key(row: Row) -> tuple[str, str, int]:
    return row.user, row.item, row.time


def in_time_order(row: Row) -> tuple[int, str, int]:
    return row.time, row.market, row.line


def split_day(
    original: Sequence[MarketLog], old: Sequence[MarketLog]
) -> tuple[list[Row], list[Row]]:
    """OLD's rows, and the rows of ORIGINAL that OLD lacks (a multiset difference: a row
    ORIGINAL repeats is in the day as many times as OLD has it fewer), each in time
    order across markets (file order within a market and a time)."""
    olds = {log.market: rows_of(log) for log in old}
    extra = sorted(olds.keys() - {log.market for log in original})
    if extra:
        raise ValueError(f"the old data has markets the original lacks: {', '.join(extra)}")
    past: list[Row] = []
    day: list[Row] = []
    for log in original:
        kept = Counter(map(key, olds.get(log.market, [])))
        for row in rows_of(log):
            if kept[key(row)] > 0:
                kept[key(row)] -= 1
            else:
                day.append(row)
        if kept.total():
            raise ValueError(f"{log.market}: the old data has rows the original lacks")
        past += olds.get(log.market, [])
    return sorted(past, key=in_time_order), sorted(day, key=in_time_order)


@dataclass
class Posted:
    """What ``POST /events`` answered for a set of rows."""

    events: int = 0
    requests: int = 0
    retries: int = 0
    accepted: int = 0
    duplicates: int = 0
    unknown_items: int = 0
    per_market: dict[str, int] = field(default_factory=dict)
    first: str = ""  # the oldest row's date
    last: str = ""
    seconds: float = 0.0


def timestamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def post_rows(url: str, api_key: str, rows: Sequence[Row], tag: str) -> Posted:
    """``rows`` in batches of ``BATCH``, each sent until it is answered 200 (at most
    ``ATTEMPTS`` times); event ids are ``<tag>:<market>:<line>``."""
    posted = Posted(events=len(rows), per_market=dict(Counter(r.market for r in rows)))
    if rows:
        posted.first, posted.last = timestamp(rows[0].time)[:10], timestamp(rows[-1].time)[:10]
    start = time.perf_counter()
    headers = {"X-API-Key": api_key}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        for first in range(0, len(rows), BATCH):
            events = [
                {"event_id": f"{tag}:{r.market}:{r.line}", "market": r.market,
                 "user_id": r.user, "item_id": r.item, "timestamp": timestamp(r.time)}
                for r in rows[first : first + BATCH]
            ]  # fmt: skip
            for attempt in range(ATTEMPTS):
                posted.requests += 1
                try:
                    reply = await http.post("/events", json={"events": events})
                except httpx.TransportError as e:
                    why = f"no reply ({type(e).__name__})"
                else:
                    if reply.status_code == 200:
                        counts = reply.json()
                        posted.accepted += counts["accepted"]
                        posted.duplicates += counts["duplicates"]
                        posted.unknown_items += counts["unknown_items"]
                        break
                    why = f"{reply.status_code} {reply.text[:200]}"
                if attempt + 1 == ATTEMPTS:
                    raise RuntimeError(f"POST /events failed {ATTEMPTS} times: {why}")
                posted.retries += 1
                print(f"POST /events: {why}; sending the batch again", file=sys.stderr)
                await asyncio.sleep(2**attempt)
    posted.seconds = time.perf_counter() - start
    return posted


def redis_ms(url: str) -> int:
    """The Redis server's clock in epoch milliseconds: stream ids are made from it."""
    with redis.Redis.from_url(url) as client:
        seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def say(what: str, posted: Posted) -> None:
    markets = ", ".join(f"{m} {n:,}" for m, n in sorted(posted.per_market.items()))
    print(
        f"{what}: {posted.events:,} events ({posted.first} .. {posted.last}; {markets}) in "
        f"{posted.requests} requests, {posted.seconds:.1f} s: accepted {posted.accepted:,}, "
        f"duplicates {posted.duplicates:,}, items the model does not know "
        f"{posted.unknown_items:,}, retried batches {posted.retries}"
    )


def post(args: argparse.Namespace) -> int:
    past, day = split_day(read_logs(args.data), read_logs(args.old))
    result: dict[str, object] = {}
    if not args.no_past:
        posted = asyncio.run(post_rows(args.url, args.api_key, past, "past"))
        say("the users' histories before the day (the old data)", posted)
        result["past"] = asdict(posted)
    time.sleep(0.002)  # every entry logged so far is older than since_ms
    result["since_ms"] = redis_ms(args.redis_url) + 1
    time.sleep(0.002)  # and every entry of the day is logged at or after it
    posted = asyncio.run(post_rows(args.url, args.api_key, day, "day"))
    say("the day (the rows the old data lacks)", posted)
    result["day"] = asdict(posted)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def check(args: argparse.Namespace) -> int:
    """Per market: ORIGINAL's rows, MERGED's, and whether they are the same multiset."""
    original = {log.market: Counter(map(key, rows_of(log))) for log in read_logs(args.data)}
    merged = {log.market: Counter(map(key, rows_of(log))) for log in read_logs(args.merged)}
    print("| market | original rows | retraining rows | lost | doubled or new |")
    print("|---|---|---|---|---|")
    bad = 0
    for market in sorted(original.keys() | merged.keys()):
        a, b = original.get(market, Counter()), merged.get(market, Counter())
        lost, extra = (a - b).total(), (b - a).total()
        bad += lost + extra
        print(f"| {market} | {a.total():,} | {b.total():,} | {lost:,} | {extra:,} |")
    total_a = sum(c.total() for c in original.values())
    total_b = sum(c.total() for c in merged.values())
    print(f"| all | {total_a:,} | {total_b:,} | | |")
    print("the same rows: yes" if not bad else f"the same rows: NO ({bad:,} differ)")
    return 0 if not bad else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("post", help="post OLD's rows, then the day's, through POST /events")
    p.add_argument("--url", required=True, help="the service")
    p.add_argument("--api-key", required=True)
    p.add_argument("--redis-url", required=True, help="the service's Redis (for since_ms)")
    p.add_argument("--data", type=Path, required=True, help="the original data folder")
    p.add_argument("--old", type=Path, required=True, help="it without the day")
    p.add_argument("--no-past", action="store_true", help="post the day alone")
    p.add_argument("--out", type=Path, required=True, help="JSON: what was posted, since_ms")
    c = commands.add_parser("check", help="MERGED holds ORIGINAL's rows, each once")
    c.add_argument("--data", type=Path, required=True, help="the original data folder")
    c.add_argument("--merged", type=Path, required=True, help="the retraining data folder")
    args = parser.parse_args()
    sys.exit(post(args) if args.command == "post" else check(args))


if __name__ == "__main__":
    main()
