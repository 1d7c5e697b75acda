"""Scale-out: two service replicas on a Redis Cluster of three masters.

Events posted through either replica are read back through the other; when a
master is killed, only the users in its slots get a 503 (the README's scaling
section cites this test). The event log on a cluster: each user's entries in their
own slot, and ``cmr events export`` reads every master's."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis
from redis.crc import key_slot

from benchmarks.processes import RedisProcess, free_port, running_service
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from service.event_export import export_events
from service.history import Event, user_tag
from tests.reliability.conftest import FULL, Report
from tests.reliability.load import KEY
from tests.service.conftest import log_entries, log_events
from training.market_files import read_logs

MASTERS = 3
# All users' requests are started at once; at most 16 per replica are in flight (as
# from a few clients), the rest wait for a connection however long that takes.
WAIT = httpx.Timeout(10, pool=None)
LIMITS = httpx.Limits(max_connections=16)
NODE_ARGS = (
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "1000",
    # Without this, a cluster that lost a master refuses every slot, not only its own.
    "--cluster-require-full-coverage", "no",
)  # fmt: skip


def _state(node: RedisProcess) -> str:
    with redis.Redis(port=node.port) as client:  # closed: no socket left to the collector
        return str(client.cluster("info")["cluster_state"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    """Three masters on loopback ports, joined by ``redis-cli --cluster create``."""
    nodes = [RedisProcess(tmp_path / f"node{i}", *NODE_ARGS) for i in range(MASTERS)]
    try:
        for node in nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not installed; scripts/test.sh installs it (redis-server)"
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while any(_state(node) != "ok" for node in nodes):
            assert time.monotonic() < deadline, "the cluster did not become ok"
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _owners(nodes: list[RedisProcess], keys: list[str]) -> list[RedisProcess]:
    """The master that holds each key's slot."""
    client = redis.RedisCluster(host="127.0.0.1", port=nodes[0].port)
    try:
        ports = [client.get_node_from_key(key).port for key in keys]
    finally:
        client.close()
        client.disconnect_connection_pools()  # close() leaves the nodes' sockets open
    return [next(n for n in nodes if n.port == port) for port in ports]


def test_two_replicas_share_a_cluster_and_a_dead_master_fails_only_its_slots(
    store: ModelStore, cluster: list[RedisProcess], report: Report
) -> None:
    users = 600 if FULL else 150
    version = store.open()
    market = next(iter(version.manifest.markets))
    known = [i for i in Vocabulary.load(version.file(version.manifest.items)).ids if i][:40]
    env = {"CMR_REDIS_CLUSTER": "true", "CMR_REDIS_TIMEOUT_S": "0.5"}
    url = cluster[0].url.removesuffix("/0")
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(running_service(store.root, url, free_port(), env=env))
            for _ in range(2)
        ]
        names = [f"user-{n}" for n in range(users)]
        # Two items of the vocabulary per user, posted through replica n % 2.
        items = {u: [known[n % 40], known[(n * 7 + 1) % 40]] for n, u in enumerate(names)}
        if items[names[0]][0] == items[names[0]][1]:
            items[names[0]].pop()
        keys = [f"{user_tag(market, u)}:h" for u in names]
        owners = dict(zip(names, _owners(cluster, keys), strict=True))
        assert {o.port for o in owners.values()} == {n.port for n in cluster}

        async def post_all() -> list[int]:
            async with (
                httpx.AsyncClient(
                    base_url=replicas[0].url, headers=KEY, timeout=WAIT, limits=LIMITS
                ) as a,
                httpx.AsyncClient(
                    base_url=replicas[1].url, headers=KEY, timeout=WAIT, limits=LIMITS
                ) as b,
            ):
                clients = (a, b)

                async def post(n: int, user: str) -> int:
                    events = [
                        {"market": market, "user_id": user, "item_id": i} for i in items[user]
                    ]
                    reply = await clients[n % 2].post("/events", json={"events": events})
                    return reply.status_code

                return await asyncio.gather(*(post(n, u) for n, u in enumerate(names)))

        async def read_all(candidates: list[str]) -> list[tuple[int, list[str]]]:
            """Each user's ranking of ``candidates`` minus their history, through the
            replica that did not take their events."""
            async with (
                httpx.AsyncClient(base_url=replicas[0].url, timeout=WAIT, limits=LIMITS) as a,
                httpx.AsyncClient(base_url=replicas[1].url, timeout=WAIT, limits=LIMITS) as b,
            ):
                clients = (b, a)

                async def read(n: int, user: str) -> tuple[int, list[str]]:
                    body = {"user_id": user, "candidates": candidates, "k": len(candidates)}
                    reply = await clients[n % 2].post(f"/markets/{market}/recommend", json=body)
                    ranked = [i["item_id"] for i in reply.json().get("items", [])]
                    return reply.status_code, ranked

                return await asyncio.gather(*(read(n, u) for n, u in enumerate(names)))

        assert set(asyncio.run(post_all())) == {200}
        before = asyncio.run(read_all(known))
        for user, (status, ranked) in zip(names, before, strict=True):
            assert status == 200
            assert set(ranked) == set(known) - set(items[user]), user  # its history was read
        # One master dies: its users get a clean 503, every other user is served.
        dead = cluster[1]
        dead.kill()
        killed = time.monotonic()
        after = asyncio.run(read_all(known))
        elapsed = time.monotonic() - killed
        served = [u for u, (s, _) in zip(names, after, strict=True) if s == 200]
        refused = [u for u, (s, _) in zip(names, after, strict=True) if s == 503]
        assert set(refused) == {u for u in names if owners[u] is dead}
        assert set(served) == {u for u in names if owners[u] is not dead}
        for user, (status, ranked) in zip(names, after, strict=True):
            if status == 200:
                assert set(ranked) == set(known) - set(items[user])
        ready = [httpx.get(f"{r.url}/readyz").status_code for r in replicas]
    report(masters=MASTERS, replicas=2, users=users, events=sum(map(len, items.values())),
           read_back=len(names), after_kill_served=len(served), after_kill_503=len(refused),
           seconds_for_all_reads_after_kill=round(elapsed, 3), ready_after_kill=ready)  # fmt: skip
    assert ready == [200, 200]


def test_the_event_log_lives_in_each_users_slot_and_exports_whole(
    cluster: list[RedisProcess], tmp_path: Path
) -> None:
    url = cluster[0].url.removesuffix("/0")
    events = [
        Event(market, f"user-{n}", f"I{n:03d}", f"e{n}")
        for n in range(60)
        for market in ("aa", "bb")
    ]
    log_events(url, events, cluster=True)
    streams = log_entries(url)
    for stream, entries in streams.items():  # the append script ran in one slot each
        for entry in entries:
            history = f"{user_tag(entry.market, entry.user)}:h"
            assert key_slot(stream.encode()) == key_slot(history.encode()), stream
    assert sum(map(len, streams.values())) == len(events)
    assert {o.port for o in _owners(cluster, list(streams))} == {n.port for n in cluster}
    dest = tmp_path / "out"
    exported = export_events(url, dest, batch=7)
    assert [(m.market, m.exported) for m in exported] == [("aa", 60), ("bb", 60)]
    for log in read_logs(dest):
        expected = [(e.user_id, e.item_id) for e in events if e.market == log.market]
        assert sorted(zip(log.users, log.items, strict=True)) == sorted(expected)
