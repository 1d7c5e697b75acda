"""Redis killed, restarted and frozen under the real service: nothing acknowledged is
lost, the service recovers within one request, and a frozen Redis is a 503 in time."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import httpx
import redis

from benchmarks.processes import RedisProcess, free_port, running_service
from model_store.store import ModelStore
from service.history import user_tag
from tests.reliability.conftest import FULL, Report
from tests.reliability.load import KEY, Load, first_market

TIMEOUT_S = 0.5  # CMR_REDIS_TIMEOUT_S for these tests
ENV = {"CMR_REDIS_TIMEOUT_S": str(TIMEOUT_S)}


async def _burst(url: str, market: str, n: int, tag: str) -> list[tuple[int, float]]:
    """``n`` event posts and ``n`` recommends at once: (status, when answered) each."""
    async with httpx.AsyncClient(base_url=url, headers=KEY, timeout=10) as http:

        async def one(i: int) -> tuple[int, float]:
            if i % 2:
                reply = await http.post(f"/markets/{market}/recommend", json={"user_id": tag})
            else:
                event = {"market": market, "user_id": tag, "item_id": f"{tag}{i}"}
                reply = await http.post("/events", json={"events": [event]})
            return reply.status_code, time.monotonic()

        return await asyncio.gather(*(one(i) for i in range(2 * n)))


def test_an_idle_service_recovers_within_one_request_of_a_redis_restart(
    store: ModelStore, redis_server: RedisProcess, report: Report
) -> None:
    with running_service(store.root, redis_server.url, free_port(), env=ENV) as service:
        market = first_market(service.url)
        # Fill the connection pool: each of these connections is stale after the restart.
        assert {s for s, _ in asyncio.run(_burst(service.url, market, 16, "before"))} == {200}
        redis_server.kill()
        redis_server.start()
        back = time.monotonic()
        replies = asyncio.run(_burst(service.url, market, 16, "after"))
        statuses = [s for s, _ in replies]
        assert statuses == [200] * 32, f"requests failed after Redis returned: {statuses}"
        recovery = min(t for _, t in replies) - back
        report(stale_requests=32, failed=0, recovery_s=round(recovery, 4))
        assert recovery <= 1.0
        assert "Unclosed" not in service.log_text()


def test_no_acknowledged_event_is_lost_across_kill_9_under_load(
    store: ModelStore, redis_server: RedisProcess, report: Report
) -> None:
    target = 10_000 if FULL else 1_500  # acknowledged events
    with running_service(store.root, redis_server.url, free_port(), env=ENV) as service:
        load = Load(service.url, first_market(service.url))
        outages: list[tuple[float, float]] = []  # (killed, back)

        async def scenario() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(stop))
            while len(load.acknowledged) < target or len(outages) < 2:
                await asyncio.sleep(2.0)
                if len(outages) < 2 or len(load.acknowledged) < target * len(outages) / 4:
                    killed = time.monotonic()
                    await asyncio.to_thread(redis_server.kill)
                    await asyncio.sleep(0.3)
                    await asyncio.to_thread(redis_server.start)
                    outages.append((killed, time.monotonic()))
            await asyncio.sleep(1.0)
            stop.set()
            await running

        asyncio.run(scenario())
        log = service.log_text()
    histories: dict[str, set[str]] = defaultdict(set)
    client = redis.Redis(port=redis_server.port)
    users = {user for user, _ in load.acknowledged}
    for user in users:
        stored = client.lrange(f"{user_tag(load.market, user)}:h", 0, -1)
        histories[user] = {item.decode() for item in stored}
    lost = [(u, i) for u, i in load.acknowledged if i not in histories[u]]
    recoveries = [load.first_success(back) - back for _, back in outages]
    # Requests sent once Redis had been back for a second, and answered before it was
    # killed again, must all succeed.
    ends = [killed for killed, _ in outages[1:]] + [float("inf")]
    late_failures = sum(
        1
        for (_, back), end in zip(outages, ends, strict=True)
        for r in load.failed(after=back + 1.0)
        if r.done < end
    )
    report(
        acknowledged_events=len(load.acknowledged),
        lost=len(lost),
        kills=len(outages),
        requests=len(load.replies),
        failed_during_outages=len(load.failed()) - late_failures,
        failed_after_recovery=late_failures,
        recovery_s=[round(r, 4) for r in recoveries],
    )
    assert len(load.acknowledged) >= target
    assert lost == []
    assert max(recoveries) <= 1.0
    assert late_failures == 0
    assert "Unclosed" not in log


def test_a_frozen_redis_is_a_503_within_the_timeout_and_recovery_is_quick(
    store: ModelStore, redis_server: RedisProcess, report: Report
) -> None:
    tries = 20 if FULL else 4
    with running_service(store.root, redis_server.url, free_port(), env=ENV) as service:
        market = first_market(service.url)
        with httpx.Client(base_url=service.url, headers=KEY, timeout=10) as http:
            event = {"market": market, "user_id": "frozen", "item_id": "x"}
            assert http.post("/events", json={"events": [event]}).status_code == 200
            redis_server.freeze()
            try:
                waits = []
                for i in range(tries):
                    start = time.monotonic()
                    if i % 2:
                        reply = http.post("/events", json={"events": [event]})
                    else:
                        reply = http.post(f"/markets/{market}/recommend", json={"user_id": "x"})
                    waits.append(time.monotonic() - start)
                    assert reply.status_code == 503, reply.text
                    assert reply.json()["error"] == "history store unavailable"
            finally:
                redis_server.thaw()
            thawed = time.monotonic()
            reply = http.post("/events", json={"events": [event]})
            recovery = time.monotonic() - thawed
            assert reply.status_code == 200
    report(timeout_s=TIMEOUT_S, requests=tries, max_503_s=round(max(waits), 4),
           recovery_s=round(recovery, 4))  # fmt: skip
    assert max(waits) <= TIMEOUT_S + 0.05
    assert recovery <= 1.0
