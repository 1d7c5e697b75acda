"""``cmr events export``: the event log (service/event_log.py) drained into per-market
interaction files that ``cmr train`` reads, resumably. What it writes into DEST, and
how an interrupt at any point is survived: service/export_files.py.

Each stream is read from just after its last exported entry; a batch of entries
(across the market's streams) is written, then the state. On a cluster a market has
a stream per slot in use, thousands: they are found with SCAN on every master and
read by pipelines of many streams, one round trip per master. Rows of one stream keep
its order; a market's streams follow one another (each row carries its time).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis
from redis.exceptions import RedisError

from service.errors import ExportFailed
from service.event_log import MARKET_CODE, STREAM_PATTERN, LogEntry, market_of
from service.export_files import ExportState, MarketFile, reconcile

BATCH = 10_000  # entries per XRANGE, and per write of rows then state
CHUNK = 500  # streams per pipeline
MAX_SEQ = 2**64 - 1
_ID = re.compile(r"(\d+)(?:-(\d+))?")

Position = tuple[int, int]  # a stream entry id, (ms, seq)
Client = redis.Redis | redis.RedisCluster
Say = Callable[[str], None]


def _position(text: str) -> Position:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _id(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


def _after(position: Position) -> str:
    """The first entry id after ``position`` (XRANGE's start is inclusive)."""
    ms, seq = position
    return _id((ms, seq + 1) if seq < MAX_SEQ else (ms + 1, 0))


def since_position(text: str) -> Position:
    """``--since``: a stream id ``<ms>-<seq>`` (entries after it), or ``<ms>`` (entries
    from that millisecond on)."""
    found = _ID.fullmatch(text.strip())
    if not found:
        raise ExportFailed(
            f"--since {text!r} is not a stream id (<ms>-<seq>, e.g. 1767225600000-0, or <ms>)"
        )
    ms, seq = int(found[1]), found[2]
    if seq is not None:
        return ms, int(seq)
    return (ms - 1, MAX_SEQ) if ms > 0 else (0, 0)


def connect(url: str) -> Client:
    """A client of the Redis at ``url``, or of the cluster it is a node of."""
    options = {"socket_connect_timeout": 5.0, "socket_timeout": 60.0}
    try:
        single = redis.Redis.from_url(url, **options)
        if not single.info("cluster").get("cluster_enabled"):
            return single
        single.close()
        return redis.RedisCluster.from_url(url, **options)
    except (RedisError, ValueError) as e:
        raise ExportFailed(f"Redis at {url}: {e}") from e


@contextmanager
def opened(url: str) -> Iterator[Client]:
    """``connect(url)``, closed on exit."""
    client = connect(url)
    try:
        yield client
    finally:
        client.close()
        if isinstance(client, redis.RedisCluster):  # its close() leaves the nodes' sockets open
            client.disconnect_connection_pools()  # type: ignore[no-untyped-call]


@contextmanager
def _redis_errors(url: str) -> Iterator[None]:
    try:
        yield
    except RedisError as e:
        raise ExportFailed(f"Redis at {url}: {e}") from e


def log_streams(client: Client) -> dict[str, list[str]]:
    """Market -> its log streams (one on one Redis; one per slot in use on a cluster)."""
    found: dict[str, list[str]] = defaultdict(list)
    for key in client.scan_iter(match=STREAM_PATTERN, count=1000, _type="STREAM"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        market = market_of(name)
        if market is not None:
            found[market].append(name)
    return {market: sorted(streams) for market, streams in found.items()}


def _read(client: Client, starts: list[tuple[str, str]], count: int) -> list[list[LogEntry]]:
    """Up to ``count`` entries of each stream from its start id on, in one pipeline."""
    with client.pipeline(transaction=False) as pipe:
        for stream, start in starts:
            pipe.xrange(stream, start, "+", count=count)
        replies = cast(list[list[tuple[bytes, dict[bytes, bytes]]]], pipe.execute())
    return [[LogEntry.parse(i, f) for i, f in reply] for reply in replies]


@dataclass
class MarketExport:
    market: str
    streams: int
    exported: int = 0
    skipped: int = 0


def export_events(
    url: str,
    dest: Path,
    *,
    since: Position | None = None,
    markets: Collection[str] | None = None,
    batch: int = BATCH,
    say: Say = lambda _: None,
) -> list[MarketExport]:
    """Append every entry of the log at ``url`` not exported yet (and after ``since``)
    of ``markets`` (default: all) to DEST's files; ``say`` hears the progress."""
    try:
        # Connected first: a bad URL leaves DEST as it was.
        with opened(url) as client, _redis_errors(url):
            dest.mkdir(parents=True, exist_ok=True)
            state = ExportState.load(dest)
            for note in reconcile(dest, state):
                say(note)
            streams = log_streams(client)
            done = []
            for market in sorted(streams) if markets is None else sorted(markets):
                if not MARKET_CODE.fullmatch(market):
                    say(f"{market!r}: skipped: not a market code a file name can carry")
                    continue
                found = streams.get(market, [])
                report = MarketExport(market, len(found))
                if found:
                    with closing(MarketFile(dest, market, state)) as out:
                        _drain(client, found, out, report, since=since, batch=batch, say=say)
                skipped = f"; {report.skipped:,} skipped (ids a row cannot hold)"
                say(
                    f"{market}: {report.exported:,} events exported to {dest / market}.tsv "
                    f"from {len(found)} stream(s)" + (skipped if report.skipped else "")
                )
                done.append(report)
            return done
    except OSError as e:  # DEST not writable, full, ...
        where = f"{e.filename}: " if e.filename else ""
        raise ExportFailed(f"{where}{e.strerror or e}") from e


def _drain(
    client: Client,
    streams: list[str],
    out: MarketFile,
    report: MarketExport,
    *,
    since: Position | None,
    batch: int,
    say: Say,
) -> None:
    """Read the market's streams in turn, a chunk at a time; commit every ``batch``
    entries and at the end."""
    pending: list[LogEntry] = []
    positions: dict[str, str] = {}  # the streams' positions that ``pending`` reaches

    def commit() -> None:
        skipped = out.commit(pending, positions)
        report.exported += len(pending) - skipped
        report.skipped += skipped
        pending.clear()
        positions.clear()

    starts: dict[str, str] = {}
    checks: dict[str, Position] = {}  # a stream's last exported entry: is it still there?
    for stream in streams:
        saved = _position(out.state.streams[stream]) if stream in out.state.streams else None
        position = max(p for p in (saved, since, (0, 0)) if p is not None)
        if position == saved:
            starts[stream], checks[stream] = _id(position), position
        else:  # new, or moved on by --since
            starts[stream], positions[stream] = _after(position), _id(position)
    queue = list(streams)
    while queue:
        chunk, queue = queue[:CHUNK], queue[CHUNK:]
        count = max(1, batch // len(chunk))  # a chunk's read holds about a batch
        replies = _read(client, [(s, starts[s]) for s in chunk], count)
        for stream, read in zip(chunk, replies, strict=True):
            entries = read
            check = checks.pop(stream, None)
            if check is not None and entries:
                if _position(entries[0].id) == check:
                    entries = entries[1:]  # exported last time
                else:  # entries leave a stream from its head only
                    say(
                        f"warning: {stream}: trimmed past the last export (entry "
                        f"{_id(check)} is gone): events logged since may be lost; export "
                        "more often, or raise CMR_EVENT_LOG_MAXLEN / CMR_EVENT_LOG_MAX_AGE_S"
                    )
            if read:
                positions[stream] = read[-1].id
                if len(read) == count:  # more to come: read on after this chunk
                    starts[stream] = _after(_position(read[-1].id))
                    queue.append(stream)
            pending.extend(entries)
            if len(pending) >= batch:
                commit()
                say(f"{report.market}: {report.exported:,} events so far")
    if pending or positions:
        commit()
