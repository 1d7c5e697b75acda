"""A copy of the tiny store per test, the app (tests/conftest.py starts the redis-server)."""

from __future__ import annotations

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
from service.app import create_app
from service.settings import Settings


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


def settings(store: ModelStore, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store": store.root,
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


@dataclasses.dataclass
class Api:
    """The app, started (lifespan entered), and an httpx client talking to it."""

    app: FastAPI
    http: httpx.AsyncClient

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)


@asynccontextmanager
async def running(config: Settings) -> AsyncIterator[Api]:
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Api(app, http)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api(store: ModelStore, flushed_redis: str) -> AsyncIterator[Api]:
    async with running(settings(store, flushed_redis)) as started:
        yield started
