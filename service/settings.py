"""The service's settings: one place, read from ``CMR_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.event_log import MARKET_CODE
from service.sessions import Provider


def _comma_separated(value: object) -> object:
    """``"xx, yy"`` -> ``("xx", "yy")``; an empty string is no markets."""
    if isinstance(value, str):
        return tuple(code.strip() for code in value.split(",") if code.strip())
    return value


# NoDecode: pydantic-settings would read a tuple from the environment as JSON.
MarketCodes = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CMR_", frozen=True)

    store: Path = Field(Path("store"), description="Model store folder.")
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = Field(
        False, description="CMR_REDIS_URL names a node of a Redis Cluster (the rest are found)."
    )
    api_key: SecretStr | None = Field(
        None, description="Required on POST /events and /admin/*; needed outside development."
    )
    development: bool = Field(False, description="Allows running without an API key.")
    history_length: int = Field(50, ge=1, le=1000, description="Items kept per user and market.")
    dedup_ttl_s: int = Field(86_400, ge=1, description="How long an event id is remembered.")
    # The event log (service/event_log.py): what `cmr events export` reads.
    event_log_maxlen: int = Field(
        1_000_000,
        ge=1,
        description="Entries kept in each market's event log (approximately; on a cluster "
        "split evenly over the 16,384 slots' streams).",
    )
    event_log_max_age_s: float = Field(
        0.0, ge=0, description="Entries logged longer ago leave the event log; 0: no age bound."
    )
    # Batching: requests waiting together are scored in one onnxruntime call.
    batching: bool = True
    max_batch_rows: int = Field(
        0,
        ge=0,
        description="Candidate rows (requests x candidates) per call; 0 = 1,024 on CPU, "
        "65,536 on CUDA.",
    )
    max_wait_ms: float = Field(2.0, ge=0, description="Longest a request waits for company.")
    # Two calls at once: one gathers its inputs or hands back results while the other
    # computes; on 2 cores, two calls of one thread beat one call of two
    # (docs/benchmarks.md).
    scoring_workers: int = Field(
        2, ge=1, le=16, description="Scoring calls that may run at once, each in a thread."
    )
    provider: Provider = "auto"
    intra_threads: int = Field(
        0, ge=0, description="onnxruntime threads per call; 0 = the cores split among workers."
    )
    inter_threads: int = Field(1, ge=1)
    switch_interval_ms: float = Field(
        0.5, gt=0, description="Python's thread switch interval (GIL hand-over), ms."
    )
    redis_timeout_s: float = Field(
        1.0,
        gt=0,
        description="The Redis budget of one request, its one retry included; then 503.",
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for the next part of a request body; then 408."
    )
    reload_interval_s: float = Field(10.0, ge=0, description="Polling for a new current; 0 off.")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    # Onboarding (`cmr onboard`): a market's shop can open before a version knows it.
    new_markets: MarketCodes = Field(
        (),
        description="Markets accepted before a model version knows them (comma-separated): "
        "events are stored and logged; recommendations rank by popularity until a version "
        "with the market is loaded.",
    )

    def threads_per_call(self) -> int:
        """The onnxruntime intra-op threads of each session."""
        if self.intra_threads:
            return self.intra_threads
        return max(1, len(os.sched_getaffinity(0)) // self.scoring_workers)

    @field_validator("new_markets")
    @classmethod
    def _market_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        bad = [code for code in codes if not MARKET_CODE.fullmatch(code)]
        if bad:
            raise ValueError(
                f"CMR_NEW_MARKETS: {', '.join(map(repr, bad))} not market codes (lowercase "
                "letters, digits and '-', starting with a letter or digit)"
            )
        return tuple(dict.fromkeys(codes))  # in order, once each

    @model_validator(mode="after")
    def _key_outside_development(self) -> Settings:
        if self.api_key is None and not self.development:
            raise ValueError(
                "CMR_API_KEY is not set: set it, or CMR_DEVELOPMENT=true for a local service"
            )
        return self
