"""How the service's commands reach Redis: one server, or the masters of a Redis Cluster.

Both send a batch of commands (each naming the key it touches) and give each
command's reply or the exception it met, so a caller can fail only what failed.

After Redis restarts, every pooled connection still points at the old server and
fails on its next use. So a connection idle for ``HEALTH_CHECK_S`` is PINGed before
use, and a command or pipeline that meets a connection error is sent once more on a
fresh connection, at once: appends de-duplicate by event id and reads change
nothing, so a second try is safe. The caller bounds both tries with one budget; a
timeout is never retried.

On a cluster, commands go to the master of their key's slot, one pipeline per
master, all at once, over a plain client per master: a master that is down fails
only its own commands. The slot map is read with CLUSTER SLOTS at the first batch
and again, at most once a second, after a node failed or answered MOVED/ASK.
redis-py's own cluster client re-reads the map inside every failing command, and
under concurrent load that stalled the commands of the healthy masters too.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AskError, ConnectionError, MovedError, RedisError

HEALTH_CHECK_S = 5
REFRESH_S = 1.0  # the slot map is re-read at most this often

Command = tuple[str, tuple[Any, ...]]  # (the key it touches, the command's words)


class Backend(Protocol):
    async def batch(self, commands: Sequence[Command]) -> list[Any]: ...
    async def ping(self) -> bool: ...
    async def aclose(self) -> None: ...


def _client(url: str, timeout_s: float) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=HEALTH_CHECK_S,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(ConnectionError,)),
    )


async def _pipeline(client: aioredis.Redis, commands: Sequence[Command]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:  # reset on every path
        for _, words in commands:
            pipe.execute_command(*words)
        return list(await pipe.execute(raise_on_error=False))


class SingleRedis:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.client = _client(url, timeout_s)

    async def batch(self, commands: Sequence[Command]) -> list[Any]:
        """One pipeline: one round trip. A connection failure raises for all."""
        return await _pipeline(self.client, commands)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def aclose(self) -> None:
        await self.client.aclose()


class ClusterRedis:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.seed = url
        self.timeout_s = timeout_s
        self.nodes: dict[str, aioredis.Redis] = {}  # "host:port" -> client
        self.owners: list[str] = []  # slot -> "host:port" of its master
        self._stale = True
        self._refreshed = 0.0
        self._lock = asyncio.Lock()

    def _node(self, address: str) -> aioredis.Redis:
        if address not in self.nodes:
            self.nodes[address] = _client(f"redis://{address}", self.timeout_s)
        return self.nodes[address]

    async def _refresh(self) -> None:
        """Read the slot map from the first node that answers (the seed, then the rest)."""
        async with self._lock:
            if not self._stale or time.monotonic() - self._refreshed < REFRESH_S:
                return
            self._refreshed = time.monotonic()
            seed = _client(self.seed, self.timeout_s)  # the nodes known may all be gone
            error: Exception = ConnectionError("no cluster node answered")
            try:
                for node in (seed, *self.nodes.values()):
                    try:
                        ranges = await node.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                        break
                    except RedisError as e:
                        error = e
                else:
                    raise error
            finally:
                await seed.aclose()
            owners = [""] * REDIS_CLUSTER_HASH_SLOTS
            for start, end, master, *_ in ranges:
                host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                owners[start : end + 1] = [f"{host}:{master[1]}"] * (end + 1 - start)
            self.owners, self._stale = owners, False

    async def batch(self, commands: Sequence[Command]) -> list[Any]:
        if self._stale:
            await self._refresh()
        if not self.owners:
            raise ConnectionError("the cluster's slot map is not known yet")
        by_node: dict[str, list[int]] = defaultdict(list)
        for i, (key, _) in enumerate(commands):
            by_node[self.owners[key_slot(key.encode())]].append(i)
        replies: list[Any] = [None] * len(commands)

        async def send(address: str, positions: list[int]) -> None:
            try:
                if not address:
                    raise ConnectionError("no master holds this slot")
                answers = await _pipeline(self._node(address), [commands[i] for i in positions])
            except (RedisError, OSError) as e:
                self._stale = True  # a failover may have moved the slots
                answers = [e] * len(positions)
            for i, answer in zip(positions, answers, strict=True):
                if isinstance(answer, MovedError | AskError):
                    self._stale = True
                replies[i] = answer

        await asyncio.gather(*(send(a, p) for a, p in by_node.items()))
        return replies

    async def ping(self) -> bool:
        """Whether some master answers: one that is down fails only its own slots."""
        if self._stale:
            await self._refresh()
        answers = await asyncio.gather(
            *(self._node(a).ping() for a in set(self.owners) if a), return_exceptions=True
        )
        return any(answer is True for answer in answers)

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.nodes.values()))


def connect(url: str, timeout_s: float, *, cluster: bool = False) -> Backend:
    """One Redis, or the cluster that ``url``'s node belongs to."""
    return ClusterRedis(url, timeout_s) if cluster else SingleRedis(url, timeout_s)
