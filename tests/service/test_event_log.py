"""The event log on a real redis-server: every event POST /events accepted is logged
once, in the same step as its history (duplicates, repeats and retries after a 503
are not), and the log stays within its bounds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from tests.service.conftest import KEY, log_entries, running_on_redis

pytestmark = pytest.mark.anyio

# A script that keeps the one-threaded server busy for ARGV[1] microseconds: commands
# sent meanwhile wait, and run after it, whether their client still waits or not.
BUSY = """
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1])
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
return 1
"""


def _event(user: str, item: str, event_id: str | None = None, **more: str) -> dict[str, str]:
    event = {"market": "aa", "user_id": user, "item_id": item, **more}
    return event | ({"event_id": event_id} if event_id else {})


async def test_every_accepted_event_is_logged_once(tmp_path: Path, flushed_redis: str) -> None:
    async with running_on_redis(tmp_path, flushed_redis, redis_timeout_s=0.3) as api:
        first = {
            "events": [
                _event("u1", "I00001", "e1", timestamp="2026-01-02T03:04:05.678Z"),
                _event("u1", "I00002", "e1"),  # a duplicate within the request
                _event("u2", "never-sold", None),  # no id: never a duplicate
                {"market": "bb", "user_id": "u1", "item_id": "I00003", "event_id": "e1"},
            ]
        }
        reply = await api.http.post("/events", json=first, headers=KEY)
        assert reply.json() == {"accepted": 3, "duplicates": 1, "unknown_items": 1}
        again = await api.http.post("/events", json=first, headers=KEY)
        assert again.json() == {"accepted": 1, "duplicates": 3, "unknown_items": 1}

        # A 503 whose events Redis stored all the same, then the client's retry.
        late = {"events": [_event("u3", "I00004", "e2"), _event("u4", "I00005", "e3")]}

        def keep_busy() -> None:
            with redis.Redis.from_url(flushed_redis) as client:
                client.eval(BUSY, 0, 1_000_000)

        busy = threading.Thread(target=keep_busy)
        busy.start()
        time.sleep(0.2)  # the server is in the script
        timed_out = await api.http.post("/events", json=late, headers=KEY)
        busy.join()
        assert timed_out.status_code == 503
        retry = await api.http.post("/events", json=late, headers=KEY)
        assert retry.json() == {"accepted": 0, "duplicates": 2, "unknown_items": 0}

    log = log_entries(flushed_redis)
    assert sorted(log) == ["cmr:{log}:aa", "cmr:{log}:bb"]
    aa = [(e.market, e.user, e.item, e.ts_ms, e.event_id) for e in log["cmr:{log}:aa"]]
    assert aa == [
        ("aa", "u1", "I00001", 1767323045678, "e1"),
        ("aa", "u2", "never-sold", None, None),
        ("aa", "u2", "never-sold", None, None),  # sent twice without an id: two events
        ("aa", "u3", "I00004", None, "e2"),
        ("aa", "u4", "I00005", None, "e3"),
    ]
    bb = [(e.market, e.user, e.item, e.event_id) for e in log["cmr:{log}:bb"]]
    assert bb == [("bb", "u1", "I00003", "e1")]
    logged_at = [int(e.id.split("-")[0]) for e in log["cmr:{log}:aa"]]
    assert abs(logged_at[0] / 1000 - time.time()) < 60  # ids: when Redis logged them


async def test_the_log_is_trimmed_by_length_and_by_age(tmp_path: Path, flushed_redis: str) -> None:
    with redis.Redis.from_url(flushed_redis) as client:
        node = int(client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    cap = 50
    async with running_on_redis(tmp_path, flushed_redis, event_log_maxlen=cap) as api:
        for start in range(0, 600, 200):
            events = [_event("u1", "I00001", f"e{n}") for n in range(start, start + 200)]
            body = {"events": events}
            assert (await api.http.post("/events", json=body, headers=KEY)).is_success
    stream = "cmr:{log}:aa"
    newest = [e.event_id for e in log_entries(flushed_redis)[stream]]
    # Approximate trimming drops whole nodes: at least the cap stays, at most a node more.
    assert cap <= len(newest) <= cap + node
    assert newest == [f"e{n}" for n in range(600 - len(newest), 600)]

    with redis.Redis.from_url(flushed_redis) as client:
        client.delete(stream)
        client.xadd(stream, {"market": "aa", "user": "old", "item": "I00001"}, id="1000-0")
    async with running_on_redis(tmp_path, flushed_redis, event_log_max_age_s=3600) as api:
        body = {"events": [_event("u1", "I00002", "fresh")]}
        assert (await api.http.post("/events", json=body, headers=KEY)).is_success
    assert [e.event_id for e in log_entries(flushed_redis)[stream]] == ["fresh"]
