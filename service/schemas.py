"""Request and response bodies of the HTTP API.

The request bodies are strict: a value is taken only in the JSON type /openapi.json
gives it (no "10" for 10, no 0 for false), so the documented schema is the contract.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

Id = Field(min_length=1, max_length=256)
# RFC 3339, as the schema's "date-time"; without an offset it is read as UTC. pydantic
# alone would also take numbers and numeric strings, as epoch seconds.
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?")


def _date_time_text(value: object) -> object:
    if value is None or (isinstance(value, str) and _DATE_TIME.fullmatch(value)):
        return value
    raise ValueError("not an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")


def _whole_number(value: object) -> object:
    """JSON Schema's integers include 10.0; strict mode alone would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Strict mode would take no string for a datetime outside JSON mode, and FastAPI
# validates parsed JSON, so this field parses the text it let through.
Timestamp = Annotated[Annotated[datetime, Strict(False)] | None, BeforeValidator(_date_time_text)]
_STRICT = ConfigDict(extra="forbid", strict=True)


class EventIn(BaseModel):
    model_config = _STRICT

    event_id: str | None = Field(None, min_length=1, max_length=256)
    market: str = Id
    user_id: str = Id
    item_id: str = Id
    timestamp: Timestamp = None


class EventsIn(BaseModel):
    model_config = _STRICT

    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventsOut(BaseModel):
    accepted: int
    duplicates: int
    unknown_items: int


class RecommendIn(BaseModel):
    model_config = _STRICT

    user_id: str = Id
    k: Annotated[int, BeforeValidator(_whole_number)] = Field(10, ge=1, le=1000)
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
    # The graph file in the model version (markets may share one call of it); None for
    # a new market that no graph scores yet.
    graph: str | None
    own_parameters: bool  # False: the shared (pre-trained) parameters score this market
    catalogue_size: int
    # "popularity": a new market (CMR_NEW_MARKETS) the served version does not know,
    # ranked by popularity pooled over every market until a version knows it.
    fallback: Literal["popularity"] | None = None


class MarketsOut(BaseModel):
    markets: list[MarketOut]


class ErrorOut(BaseModel):
    error: str
    detail: object | None = None


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    model: str | None  # the served version
    variant: str | None
    provider: str | None
    redis: Literal["ok", "unavailable"]


class ReloadOut(BaseModel):
    serving: str
    variant: str


def add_schemas(openapi: dict[str, Any], *models: type[BaseModel]) -> None:
    """Put ``models`` (and the models they use) in an OpenAPI document's components."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(found.pop("$defs", {}))
        components[model.__name__] = found
