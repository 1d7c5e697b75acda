"""The event log: every event POST /events accepted, once, in Redis streams, for
``cmr events export`` (service/event_export.py) to turn into training files.

The append script (service/history.py) adds a user's new events to the log in the
same atomic step as their history and de-duplication, so a duplicate or a retried
request is never logged twice. A Lua script on a Redis Cluster may only touch keys of
one slot, and a user's keys are in the slot of their hash tag ``{<market>:<user
hash>}``; so on a cluster the log is one stream per market and slot, each in its
slot, and the export reads them all. On one Redis it is one stream per market.

Keys:
    cmr:{log}:<market>        one Redis: the market's log
    cmr:{log-<n>}:<market>    a cluster: the log of the market's users whose keys are
                              in the slot of the tag ``log-<n>`` (n: the smallest
                              number whose tag hashes to that slot)

Each entry (its id: the time Redis appended it, ``<ms>-<seq>``) holds ``market``,
``user``, ``item``, ``ts`` (the event's timestamp in epoch milliseconds; empty when it
had none) and ``event_id`` (empty when it had none). A stream is trimmed to its length
cap (approximately: Redis drops whole nodes, so up to one node's entries more stay)
and, where a maximum age is set, by age (entries appended longer ago leave).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# SCAN's pattern for every log stream, and the exact form of their names.
STREAM_PATTERN = "cmr:{log*}:*"
_STREAM = re.compile(r"cmr:\{log(?:-\d+)?\}:(?P<market>.+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A market code as training/market_files.py reads it from a file name: what the export
# can write a market's file under, and so what a market's events can be trained from.
MARKET_CODE = re.compile(r"[a-z0-9][a-z0-9-]*")


@cache
def _slot_tags() -> list[int]:
    """slot -> the smallest n whose tag ``log-<n>`` hashes to it (about 150,000 hashes,
    a tenth of a second, once per process)."""
    tags = [-1] * REDIS_CLUSTER_HASH_SLOTS
    left, n = REDIS_CLUSTER_HASH_SLOTS, 0
    while left:
        slot = key_slot(f"log-{n}".encode())
        if tags[slot] < 0:
            tags[slot] = n
            left -= 1
        n += 1
    return tags


@dataclass(frozen=True, kw_only=True)
class EventLog:
    """Where the append script logs a user's events, and how much of the log it keeps.

    ``max_length`` bounds a market's log: on a cluster it is split evenly over the
    slots' streams, so the market's total stays near it."""

    max_length: int
    max_age_s: float = 0.0  # 0: no age bound
    cluster: bool = False

    def prepare(self) -> None:
        """Compute what ``stream`` needs at start-up, not in a request."""
        if self.cluster:
            _slot_tags()

    def stream(self, market: str, user_key: str) -> str:
        """The stream for the events of the user one of whose keys is ``user_key``."""
        if not self.cluster:
            return f"cmr:{{log}}:{market}"
        return f"cmr:{{log-{_slot_tags()[key_slot(user_key.encode())]}}}:{market}"

    @property
    def stream_length(self) -> int:
        """The length cap of each stream."""
        if not self.cluster:
            return self.max_length
        return max(1, math.ceil(self.max_length / REDIS_CLUSTER_HASH_SLOTS))

    def min_id(self, now_s: float) -> int:
        """Entries appended before this time (epoch ms) leave the log; 0: none leave."""
        return max(1, int((now_s - self.max_age_s) * 1000)) if self.max_age_s else 0


def market_of(stream: str) -> str | None:
    """The market whose log ``stream`` is; None for a key that is no log stream."""
    found = _STREAM.fullmatch(stream)
    return found["market"] if found else None


def epoch_ms(when: datetime | None) -> str:
    """An event's ``ts`` field: its timestamp in epoch milliseconds (without a zone: UTC),
    or empty."""
    if when is None:
        return ""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return str((aware - _EPOCH) // timedelta(milliseconds=1))  # exact: no float rounding


@dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One entry of a log stream, as the export reads it."""

    id: str  # <ms>-<seq>: when Redis appended it
    market: str
    user: str
    item: str
    ts_ms: int | None  # the event's timestamp, if it had one
    event_id: str | None

    @property
    def time_s(self) -> int:
        """The event's time in epoch seconds: its timestamp, else when it was logged."""
        ms = self.ts_ms if self.ts_ms is not None else int(self.id.split("-")[0])
        return ms // 1000

    @classmethod
    def parse(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> LogEntry:
        def text(name: str) -> str:
            return fields.get(name.encode(), b"").decode()

        ts, event_id = text("ts"), text("event_id")
        return cls(
            id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            market=text("market"),
            user=text("user"),
            item=text("item"),
            ts_ms=int(ts) if ts else None,
            event_id=event_id or None,
        )
