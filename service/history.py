"""Users' histories: the ``HistoryStore`` interface, and its Redis implementation
(capped lists, newest first, appended with de-duplication).

Keys (``cmr:`` namespace; the user id is hashed, so no id can form another key):
    cmr:{<market>:<user hash>}:h            the history: item ids, newest first
    cmr:{<market>:<user hash>}:e:<id hash>  an event id seen lately (expires)
The braces are a Redis Cluster hash tag: a user's keys share one slot, so the Lua
script that appends and de-duplicates touches one node and stays atomic there. The
same script logs each new event in the event log, a stream in that slot too
(service/event_log.py).

Commands that arrive together go out together: on one Redis as one pipeline (one
round trip); on a cluster, each to its node at once, so a node that is down fails
only the commands for its slots.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from redis.exceptions import RedisError

from service.errors import HistoryUnavailable
from service.event_log import EventLog, epoch_ms
from service.redis_client import Backend, Command

T = TypeVar("T")

# KEYS[1] history; KEYS[2] the event log's stream; KEYS[3..] the dedup keys of the
# events that have an id, in order. ARGV: history length, dedup ttl, log length cap,
# log min id (epoch ms; 0: no age bound), market, user, then per event its item id,
# "1" if it has an id else "0", its id (or empty), its timestamp (epoch ms, or empty).
# Returns {appended, duplicates}. Only new events are appended and logged.
APPEND = """
local maxlen, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local logcap, minid = tonumber(ARGV[3]), ARGV[4]
local market, user = ARGV[5], ARGV[6]
local added, dups, k = 0, 0, 3
for i = 7, #ARGV, 4 do
  local fresh = true
  if ARGV[i + 1] == '1' then
    fresh = redis.call('SET', KEYS[k], '1', 'NX', 'EX', ttl)
    k = k + 1
  end
  if fresh then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    redis.call('XADD', KEYS[2], '*', 'market', market, 'user', user, 'item', ARGV[i],
               'ts', ARGV[i + 3], 'event_id', ARGV[i + 2])
    added = added + 1
  else
    dups = dups + 1
  end
end
if added > 0 then
  redis.call('LTRIM', KEYS[1], 0, maxlen - 1)
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', logcap)
  if minid ~= '0' then
    redis.call('XTRIM', KEYS[2], 'MINID', minid)
  end
end
return {added, dups}
"""


@dataclass(frozen=True)
class Event:
    market: str
    user_id: str
    item_id: str
    event_id: str | None = None
    timestamp: datetime | None = None


Counts = dict[str, tuple[int, int]]  # market -> (appended, duplicates)


class HistoryStore(Protocol):
    """Each user's recent items per market. Every method raises ``HistoryUnavailable``
    when the store does not answer within its budget (``ping`` says False instead)."""

    async def append(self, events: Sequence[Event]) -> Counts:
        """Append each user's events (by timestamp where all have one, else as sent),
        de-duplicated by (market, user, event_id); counts once the store acknowledged."""
        ...

    async def history(self, market: str, user_id: str) -> list[str]:
        """The user's item ids in this market, oldest first."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def user_tag(market: str, user_id: str) -> str:
    return f"cmr:{{{market}:{_digest(user_id)}}}"


class RedisHistory:
    """The ``HistoryStore`` on Redis (one server or a cluster: service/redis_client.py)."""

    def __init__(
        self,
        client: Backend,
        *,
        max_length: int,
        dedup_ttl_s: int,
        timeout_s: float,
        log: EventLog,
    ) -> None:
        self.client = client
        self.max_length = max_length
        self.dedup_ttl_s = dedup_ttl_s
        self.timeout_s = timeout_s
        self.log = log
        log.prepare()
        # History reads waiting for the next pipeline, and the pipelines under way.
        self._reads: list[tuple[str, asyncio.Future[list[bytes]]]] = []
        self._reading: set[asyncio.Task[None]] = set()

    async def _bounded(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):  # unlike wait_for, no task per call
                return await call
        except (RedisError, OSError, TimeoutError) as e:
            raise HistoryUnavailable.because(e) from e

    async def _batch(self, commands: list[Command]) -> list[Any]:
        """Each command's reply, or the ``HistoryUnavailable`` it met, within the budget."""
        replies = await self._bounded(self.client.batch(commands))
        return [HistoryUnavailable.because(r) if isinstance(r, Exception) else r for r in replies]

    async def ping(self) -> bool:
        try:
            return await self._bounded(self.client.ping())
        except HistoryUnavailable:
            return False

    async def close(self) -> None:
        await self.client.aclose()

    async def append(self, events: Sequence[Event]) -> Counts:
        """All users' events in one round trip (``HistoryStore.append``)."""
        by_user: dict[tuple[str, str], list[Event]] = defaultdict(list)
        for event in events:
            by_user[(event.market, event.user_id)].append(event)
        calls: list[Command] = []
        min_id = self.log.min_id(time.time())
        for (market, user_id), user_events in by_user.items():
            ordered = user_events
            if all(e.timestamp is not None for e in user_events):
                ordered = sorted(user_events, key=lambda e: cast(datetime, e.timestamp))
            tag = user_tag(market, user_id)
            keys = [f"{tag}:h", self.log.stream(market, tag)] + [
                f"{tag}:e:{_digest(e.event_id)}" for e in ordered if e.event_id is not None
            ]
            args: list[Any] = [
                self.max_length, self.dedup_ttl_s, self.log.stream_length, min_id, market, user_id
            ]  # fmt: skip
            for e in ordered:
                has_id = e.event_id is not None
                args += [e.item_id, "1" if has_id else "0", e.event_id or "", epoch_ms(e.timestamp)]
            # EVAL, not EVALSHA: no SCRIPT EXISTS round trip per pipeline, and nothing
            # to reload into a Redis that restarted with an empty script cache.
            calls.append((keys[0], ("EVAL", APPEND, len(keys), *keys, *args)))
        replies = await self._batch(calls)
        for reply in replies:
            if isinstance(reply, HistoryUnavailable):
                raise reply  # some may be stored: the client's retry is de-duplicated
        counts: Counts = {}
        for (market, _), (added, duplicates) in zip(by_user, replies, strict=True):
            before = counts.get(market, (0, 0))
            counts[market] = (before[0] + added, before[1] + duplicates)
        return counts

    async def history(self, market: str, user_id: str) -> list[str]:
        """The user's item ids in this market, oldest first.

        Requests that arrive together (one turn of the event loop) read in one
        pipeline: one round trip, and less of the event loop's CPU per read than
        a call each (docs/benchmarks.md)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bytes]] = loop.create_future()
        self._reads.append((f"{user_tag(market, user_id)}:h", future))
        if len(self._reads) == 1:
            loop.call_soon(self._read_waiting)
        raw = await future
        return [item.decode() if isinstance(item, bytes) else str(item) for item in reversed(raw)]

    def _read_waiting(self) -> None:
        reads, self._reads = self._reads, []
        task = asyncio.create_task(self._read(reads))
        self._reading.add(task)
        task.add_done_callback(self._reading.discard)

    async def _read(self, reads: list[tuple[str, asyncio.Future[list[bytes]]]]) -> None:
        try:
            lists: list[Command] = [
                (key, ("LRANGE", key, 0, self.max_length - 1)) for key, _ in reads
            ]
            replies = await self._batch(lists)
        except BaseException as e:  # HistoryUnavailable, a bug, a cancel: every reader hears
            failure = e if isinstance(e, Exception) else HistoryUnavailable(detail="cancelled")
            for _, future in reads:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(e, Exception):
                raise
            return
        for (_, future), reply in zip(reads, replies, strict=True):
            if future.done():  # its request went away
                continue
            if isinstance(reply, HistoryUnavailable):
                future.set_exception(reply)
            else:
                future.set_result(reply)
