"""The app under test: ``api`` on in-memory fakes (tests/service/fakes.py: no Redis, no
onnxruntime, no torch), ``redis_api`` on a real redis-server (tests/conftest.py starts
one per test session) and a copy of the tiny store's real graphs, ``running_on_redis``
on the real redis-server and a fake version."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from model_store.manifest import MANIFEST
from model_store.store import ModelStore, Version
from service import redis_client
from service.app import create_app
from service.event_export import opened
from service.event_log import STREAM_PATTERN, EventLog, LogEntry
from service.graphs import LoadedVersion
from service.history import Event, HistoryStore, RedisHistory
from service.loading import VersionSource
from service.settings import Settings
from tests.service.fakes import FakeSource, MemoryHistory, fake_version


def clone_version(
    store: ModelStore,
    source: str,
    name: str,
    edit: Callable[[Path], None] | None = None,
    **changes: Any,
) -> Version:
    """Publish a copy of ``source`` as ``name`` (freshly hashed), unpromoted; ``edit``
    may change the copied files (it gets their folder) before they are hashed."""
    src = store.open(source, verify=False)
    with store.staging() as folder:
        shutil.copytree(src.path, folder, dirs_exist_ok=True)
        (folder / MANIFEST).unlink()
        if edit is not None:
            edit(folder)
        manifest = dataclasses.replace(src.manifest, version=name, files={}, **changes)
        return store.publish(folder, manifest, promote=False)


def settings(store: Path, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store": store,
        "redis_url": redis_url,
        "api_key": "test-key",
        "history_length": 50,
        "max_wait_ms": 20.0,
        "reload_interval_s": 0,
        "intra_threads": 1,
        "provider": "cpu",
    }
    return Settings(**(values | overrides))


KEY = {"X-API-Key": "test-key"}
JSON = {"content-type": "application/json"}  # the JSON routes refuse other bodies (415)
RECOMMEND = "/markets/{market}/recommend"
ERROR_OUT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}


def events_of(*events: tuple[str, str, str]) -> dict[str, Any]:
    """An /events body of (market, user, event id) events, all of one item."""
    return {
        "events": [
            {"market": m, "user_id": u, "event_id": e, "item_id": "I00001"} for m, u, e in events
        ]
    }


def log_events(
    url: str, events: list[Event], *, cluster: bool = False, maxlen: int = 100_000
) -> None:
    """Append ``events`` as POST /events does (histories, de-duplication, the log)."""

    async def append() -> None:
        history = RedisHistory(
            redis_client.connect(url, 5.0, cluster=cluster),
            max_length=50,
            dedup_ttl_s=3600,
            timeout_s=5.0,
            log=EventLog(max_length=maxlen, cluster=cluster),
        )
        try:
            await history.append(events)
        finally:
            await history.close()

    asyncio.run(append())


def log_entries(url: str) -> dict[str, list[LogEntry]]:
    """Each event log stream of the Redis (or cluster node) at ``url``: its entries."""
    with opened(url) as client:
        keys = [k.decode() for k in client.scan_iter(match=STREAM_PATTERN, _type="STREAM")]
        return {k: [LogEntry.parse(i, f) for i, f in client.xrange(k)] for k in sorted(keys)}


@dataclasses.dataclass
class Api:
    """The app, started (lifespan entered), and an httpx client talking to it."""

    app: FastAPI
    http: httpx.AsyncClient

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.resources.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)

    @property
    def loaded(self) -> LoadedVersion:
        served: LoadedVersion = self.app.state.resources.reloader.serving()
        return served

    async def post_history(self, market: str, user: str, items: list[str]) -> None:
        events = [{"market": market, "user_id": user, "item_id": i} for i in items]
        reply = await self.http.post("/events", json={"events": events}, headers=KEY)
        assert reply.status_code == 200, reply.text

    def catalogue(self, market: str) -> list[str]:
        """The market's items, most popular first, in the version served."""
        loaded = self.loaded
        return [loaded.vocabulary.item(int(i)) for i in loaded.markets[market].catalogue.items]


@asynccontextmanager
async def running(
    config: Settings, *, history: HistoryStore | None = None, source: VersionSource | None = None
) -> AsyncIterator[Api]:
    app = create_app(config, history=history, source=source)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Api(app, http)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running_fake(tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    """The app on fakes: a ``MemoryHistory`` and one ``fake_version``, tiny-1."""
    config = settings(tmp_path, "redis://127.0.0.1:1/0", **overrides)  # never connected
    history = MemoryHistory(config.history_length)
    async with running(config, history=history, source=FakeSource(fake_version())) as api:
        yield api


@asynccontextmanager
async def running_on_redis(tmp_path: Path, redis_url: str, **overrides: Any) -> AsyncIterator[Api]:
    """The app on a real redis-server and one ``fake_version``, tiny-1 (no trained graphs)."""
    config = settings(tmp_path, redis_url, **overrides)
    async with running(config, source=FakeSource(fake_version())) as api:
        yield api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_fake(tmp_path) as started:
        yield started


@pytest.fixture
async def redis_api(store: ModelStore, flushed_redis: str) -> AsyncIterator[Api]:
    async with running(settings(store.root, flushed_redis)) as started:
        yield started
