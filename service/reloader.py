"""Hot reload: notice a new ``current`` version, load and warm it off the request path,
swap it in at once; a version that fails is refused and the old one keeps serving.

Requests read ``Reloader.loaded`` once and keep that object, so the ones in flight
finish on the graphs they started with.
"""

from __future__ import annotations

import asyncio
import logging

from model_store.store import ModelStore
from service.graphs import LoadedVersion, load_version
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


class Reloader:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.store = ModelStore(settings.store)
        self.metrics = metrics
        self.loaded: LoadedVersion | None = None
        self.refused: dict[str, str] = {}  # version -> why, so polling does not retry it
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def reload(self, force: bool = False) -> LoadedVersion:
        """Load the store's current version if it is not the one served.
        Raises on failure (the served version stays)."""
        async with self._lock:
            current = await asyncio.to_thread(self.store.current)
            if current is None:
                raise LookupError(f"{self.store.root} has no current version")
            if self.loaded is not None and self.loaded.version == current:
                return self.loaded
            if current in self.refused and not force:
                raise RuntimeError(f"version {current} was refused: {self.refused[current]}")
            s = self.settings
            try:
                loaded = await asyncio.to_thread(
                    load_version,
                    self.store,
                    current,
                    s.provider,
                    s.threads_per_call(),
                    s.inter_threads,
                )
            except Exception as e:
                self.refused[current] = str(e)
                self.metrics.reloads.labels("refused").inc()
                log.error("refused model version %s: %s", current, e)
                raise
            previous = self.loaded
            self.loaded = loaded  # the swap: one assignment
            self.metrics.reloads.labels("loaded").inc()
            self.metrics.serving(loaded.version, loaded.variant, loaded.provider)
            log.info(
                "serving %s (%s on %s)%s",
                loaded.version,
                loaded.variant,
                loaded.provider,
                f", was {previous.version}" if previous else "",
            )
            return loaded

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await self.reload()
            except Exception as e:  # logged and counted in reload(); keep polling
                log.debug("poll: %s", e)

    def start(self) -> None:
        if self.settings.reload_interval_s > 0:
            self._task = asyncio.create_task(self._poll(), name="model-reloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
