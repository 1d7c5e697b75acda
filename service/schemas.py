"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Id = Field(min_length=1, max_length=256)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(None, min_length=1, max_length=256)
    market: str = Id
    user_id: str = Id
    item_id: str = Id
    timestamp: datetime | None = None


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventsOut(BaseModel):
    accepted: int
    duplicates: int
    unknown_items: int


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Id
    k: int = Field(10, ge=1, le=1000)
    candidates: list[str] | None = Field(None, min_length=1, max_length=5000)
    exclude_seen: bool = True


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendOut(BaseModel):
    market: str
    user_id: str
    items: list[ScoredItem]
    model_version: str
    variant: str
    fallback: Literal["popularity"] | None


class MarketOut(BaseModel):
    market: str
    graph: str  # the graph file in the model version; markets may share one call of it
    own_parameters: bool  # False: the shared (pre-trained) parameters score this market
    catalogue_size: int


class MarketsOut(BaseModel):
    markets: list[MarketOut]


class ErrorOut(BaseModel):
    error: str
    detail: object | None = None
