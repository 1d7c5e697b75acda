"""Hot reload: notice a new ``current`` version, load and warm it off the request path,
swap it in at once; a version that fails is refused and the old one keeps serving.

Requests read ``Reloader.loaded`` once and keep that object, so the ones in flight
finish on the graphs they started with.
"""

from __future__ import annotations

import asyncio
import logging

from service.errors import ModelNotLoaded, VersionRefused
from service.graphs import LoadedVersion
from service.loading import VersionSource
from service.metrics import Metrics

log = logging.getLogger(__name__)


class Reloader:
    def __init__(self, source: VersionSource, metrics: Metrics, *, interval_s: float) -> None:
        """``interval_s``: how often to look for a new current version; 0 never."""
        self.source = source
        self.metrics = metrics
        self.interval_s = interval_s
        self.loaded: LoadedVersion | None = None
        self.refused: dict[str, str] = {}  # version -> why, so polling does not retry it
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def serving(self) -> LoadedVersion:
        """The version served now, or ``ModelNotLoaded``."""
        if self.loaded is None:
            raise ModelNotLoaded()
        return self.loaded

    async def reload(self, force: bool = False) -> LoadedVersion:
        """Load the source's current version if it is not the one served; a version
        refused before is tried again only when ``force``d. Raises ``VersionRefused``
        (the served version stays)."""
        async with self._lock:
            current = await asyncio.to_thread(self.source.current)
            if current is None:
                raise VersionRefused("the store has no current version")
            if self.loaded is not None and self.loaded.version == current:
                return self.loaded
            if current in self.refused and not force:
                raise VersionRefused(f"version {current} was refused: {self.refused[current]}")
            try:
                loaded = await asyncio.to_thread(self.source.load, current)
            except VersionRefused as e:
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
            await asyncio.sleep(self.interval_s)
            try:
                await self.reload()
            except VersionRefused as e:  # logged and counted in reload(); keep polling
                log.debug("poll: %s", e)
            except Exception:  # a bug must not end polling for the life of the process
                log.exception("poll: reload failed unexpectedly")

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._poll(), name="model-reloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
