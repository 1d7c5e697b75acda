"""Concurrent clients for the reliability tests: a mix of event batches and
recommendations against a running service, every reply recorded."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpx

KEY = {"X-API-Key": "bench"}  # the key benchmarks.processes.running_service sets


def first_market(url: str) -> str:
    """The first market the service at ``url`` serves (GET /markets)."""
    return str(httpx.get(f"{url}/markets").json()["markets"][0]["market"])


@dataclass(frozen=True)
class Reply:
    kind: str  # "events" or "recommend"
    sent: float  # time.monotonic()
    done: float
    status: int  # 0: no HTTP reply at all (the connection failed)


@dataclass
class Load:
    """``clients`` clients; every ``event_every``-th request of a client posts
    ``batch`` events with fresh event ids and items (so none is a duplicate), the
    others ask for recommendations. Users get at most ``per_user`` events, fewer than
    the service keeps, so every acknowledged event must be found in its history."""

    url: str
    market: str
    clients: int = 8
    event_every: int = 5
    batch: int = 10
    per_user: int = 40
    replies: list[Reply] = field(default_factory=list)
    acknowledged: list[tuple[str, str]] = field(default_factory=list)  # (user, item)
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def events(self) -> list[dict[str, str]]:
        events = []
        for _ in range(self.batch):
            n = next(self._serial)
            user = f"load-{n // self.per_user}"
            events.append(
                {"market": self.market, "user_id": user, "item_id": f"i{n}", "event_id": f"e{n}"}
            )
        return events

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(
            base_url=self.url, headers=KEY, timeout=10, limits=limits
        ) as http:
            await asyncio.gather(*(self._client(http, c, stop) for c in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, client: int, stop: asyncio.Event) -> None:
        for i in itertools.count(client):
            if stop.is_set():
                return
            sent = time.monotonic()
            events = self.events() if i % self.event_every == 0 else None
            try:
                if events is not None:
                    reply = await http.post("/events", json={"events": events})
                else:
                    user = f"load-{i % 50}"
                    reply = await http.post(
                        f"/markets/{self.market}/recommend", json={"user_id": user, "k": 5}
                    )
                status = reply.status_code
            except httpx.TransportError:
                status = 0
            self.replies.append(
                Reply("events" if events else "recommend", sent, time.monotonic(), status)
            )
            if events is not None and status == 200:
                self.acknowledged += [(e["user_id"], e["item_id"]) for e in events]

    def failed(self, after: float = 0.0, before: float = float("inf")) -> list[Reply]:
        """Replies other than 200 to requests sent in [after, before)."""
        return [r for r in self.replies if after <= r.sent < before and r.status != 200]

    def first_success(self, after: float) -> float:
        """When the first request sent at or after ``after`` got its 200."""
        return min(r.done for r in self.replies if r.sent >= after and r.status == 200)
