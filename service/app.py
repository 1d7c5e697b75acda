"""The app: ``create_app(settings)`` builds it; its lifespan makes the resources.

Routes are in service/routes/<resource>.py, the resources they share and their
dependencies in service/deps.py, the request metrics, the guard and the fast path in
service/middleware.py, every failure, its reply and the handlers in service/errors.py.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from model_store.store import ModelStore
from service import redis_client
from service.deps import Resources
from service.errors import InternalError, VersionRefused, documented, handlers
from service.event_log import EventLog
from service.history import HistoryStore, RedisHistory
from service.loading import StoreSource, VersionSource
from service.metrics import Metrics
from service.middleware import FastRoutes, RequestGuard, RequestMetrics
from service.openapi import served_openapi
from service.reloader import Reloader
from service.routes import FAST_ROUTES, ROUTERS
from service.scorer import BatchingScorer
from service.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    history: HistoryStore | None = None,
    source: VersionSource | None = None,
) -> FastAPI:
    """The service; ``history`` and ``source`` replace Redis and the model store (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings
        metrics = Metrics()
        store = history or RedisHistory(
            redis_client.connect(s.redis_url, s.redis_timeout_s, cluster=s.redis_cluster),
            max_length=s.history_length,
            dedup_ttl_s=s.dedup_ttl_s,
            timeout_s=s.redis_timeout_s,
            log=EventLog(
                max_length=s.event_log_maxlen,
                max_age_s=s.event_log_max_age_s,
                cluster=s.redis_cluster,
            ),
        )
        versions = source or StoreSource(
            ModelStore(s.store), s.provider, s.threads_per_call(), s.inter_threads
        )
        made = Resources(
            settings=s,
            metrics=metrics,
            history=store,
            scorer=BatchingScorer(
                metrics,
                max_rows=s.max_batch_rows,
                max_wait_s=s.max_wait_ms / 1000,
                enabled=s.batching,
                workers=s.scoring_workers,
            ),
            reloader=Reloader(versions, metrics, interval_s=s.reload_interval_s),
        )
        try:
            await made.reloader.reload()
        except VersionRefused as e:  # serve nothing yet; /readyz says so, polling retries
            log.warning("no model loaded at start: %s", e)
        await made.scorer.start()
        made.reloader.start()
        app.state.resources = made
        # A scoring thread whose call returned waits for the GIL until the event loop
        # lets go of it, by default up to 5 ms: long beside a call of about 10 ms.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(s.switch_interval_ms / 1000)
        try:
            yield
        finally:
            sys.setswitchinterval(switch)
            await made.reloader.stop()
            await made.scorer.stop()
            await store.close()

    app = FastAPI(
        title="Cross-market recommendation service",
        lifespan=lifespan,
        responses=documented(InternalError),
        exception_handlers=handlers(),
    )
    for router in ROUTERS:
        app.include_router(router)

    # The last added is the outermost: metrics see every reply, the guard's too.
    app.add_middleware(FastRoutes, routes=FAST_ROUTES)
    app.add_middleware(
        RequestGuard,
        limit=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        api_key=settings.api_key,
    )
    app.add_middleware(RequestMetrics)
    served_openapi(app)
    return app
