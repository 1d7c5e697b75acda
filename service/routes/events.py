"""``POST /events``: append interactions to their users' histories."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from service.deps import Loaded, Res
from service.errors import HistoryUnavailable, InvalidRequest, ModelNotLoaded, documented
from service.history import Event
from service.schemas import EventsIn, EventsOut

router = APIRouter()


def _utc(when: datetime | None) -> datetime | None:
    """Timestamps without a zone are read as UTC, so all of them compare."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


@router.post("/events", responses=documented(InvalidRequest, ModelNotLoaded, HistoryUnavailable))
async def post_events(body: EventsIn, resources: Res, loaded: Loaded) -> EventsOut:
    """Append events to their users' histories, once Redis acknowledged them.

    De-duplication is per (market, user, event_id), for CMR_DEDUP_TTL_S; events
    without an event_id are never duplicates. A 503 (Redis not answering in time)
    may still have stored some or all of the events: retry with the same event_ids,
    which is safe, as the stored ones count as duplicates. An event for a market the
    served model does not know is invalid (422), unless the market is a new one
    (CMR_NEW_MARKETS), whose events are stored and logged as any other's."""
    served = set(loaded.markets).union(resources.settings.new_markets)
    unknown_markets = sorted({e.market for e in body.events} - served)
    if unknown_markets:
        raise InvalidRequest(f"unknown market(s): {', '.join(unknown_markets)}")
    events = [
        Event(e.market, e.user_id, e.item_id, e.event_id, _utc(e.timestamp)) for e in body.events
    ]
    counts = await resources.history.append(events)
    metrics = resources.metrics
    unknown = 0
    for e in events:
        if e.item_id not in loaded.vocabulary:
            unknown += 1
            metrics.unknown_items.labels(e.market).inc()
    for market, (accepted, duplicates) in counts.items():
        metrics.events.labels(market).inc(accepted)
        metrics.duplicates.labels(market).inc(duplicates)
    return EventsOut(
        accepted=sum(a for a, _ in counts.values()),
        duplicates=sum(d for _, d in counts.values()),
        unknown_items=unknown,
    )
