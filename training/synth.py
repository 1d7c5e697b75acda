"""Synthetic multi-market data with structure a good model can find.

Items belong to topics shared by every market (the shared item structure: items
of a topic are bought together everywhere). Each market has its own taste over
topics and sells only part of the catalogue (the market-specific preferences).
A user picks a topic by the market's taste and buys mostly within it. So:
market popularity beats global popularity, and a model of co-purchases (EASE^R,
Bert4CMR) beats both. Files are written in XMarket format, dates included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    markets: tuple[str, ...] = ("aa", "bb", "cc")
    users: tuple[int, ...] = (400, 200, 80)  # per market: one rich, some starved
    items: int = 300
    topics: int = 12
    min_history: int = 5
    mean_extra_history: float = 4.0  # history = min_history + Poisson(this)
    topic_focus: float = 0.85  # chance a purchase comes from the user's topic
    market_share: float = 0.8  # fraction of the catalogue each market sells
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.users) != len(self.markets):
            raise ValueError(f"{len(self.markets)} markets but {len(self.users)} user counts")
        if self.items < self.topics or self.topics < 1:
            raise ValueError("need at least one topic and one item per topic")
        if self.min_history < 3:
            raise ValueError("min_history must be at least 3 so every user can be split")


def _choose(
    rng: np.random.Generator, pool: np.ndarray, *, weights: np.ndarray, n: int
) -> list[int]:
    p = weights / weights.sum()
    return [int(i) for i in rng.choice(pool, size=min(n, len(pool)), replace=False, p=p)]


@dataclass(frozen=True)
class SynthWorld:
    """What the data is drawn from: the best any model could know (benchmarks/synth_ceiling.py)."""

    topic: np.ndarray  # (items,) each item's topic
    appeal: np.ndarray  # (items,) each item's popularity weight
    taste: list[np.ndarray]  # per market: (topics,) the chance a user's topic is each
    sold: list[np.ndarray]  # per market: the items it sells


def synthesize(cfg: SynthConfig) -> dict[str, list[tuple[str, str, float, str]]]:
    """Market code -> rows (userId, itemId, rating, YYYY-MM-DD)."""
    return _draw(cfg)[1]


def synth_world(cfg: SynthConfig) -> SynthWorld:
    """The parameters ``synthesize`` draws its rows from."""
    return _draw(cfg)[0]


def _draw(cfg: SynthConfig) -> tuple[SynthWorld, dict[str, list[tuple[str, str, float, str]]]]:
    rng = np.random.default_rng(cfg.seed)
    topic = rng.permutation(np.arange(cfg.items) % cfg.topics)
    appeal = 1.0 / (1.0 + rng.permutation(cfg.items)) ** 0.7  # Zipf-like item popularity
    world = SynthWorld(topic=topic, appeal=appeal, taste=[], sold=[])
    out: dict[str, list[tuple[str, str, float, str]]] = {}
    for m, (code, n_users) in enumerate(zip(cfg.markets, cfg.users, strict=True)):
        taste = rng.dirichlet(np.full(cfg.topics, 0.5))
        sold = np.flatnonzero(rng.random(cfg.items) < cfg.market_share)
        world.taste.append(taste)
        world.sold.append(sold)
        rows: list[tuple[str, str, float, str]] = []
        for u in range(n_users):
            user_topic = rng.choice(cfg.topics, p=taste)
            length = cfg.min_history + rng.poisson(cfg.mean_extra_history)
            in_topic = sold[topic[sold] == user_topic]
            n_focus = int(rng.binomial(length, cfg.topic_focus))
            bought = _choose(rng, in_topic, weights=appeal[in_topic], n=n_focus)
            rest = np.setdiff1d(sold, bought)
            bought += _choose(
                rng, rest, weights=appeal[rest] * taste[topic[rest]], n=length - len(bought)
            )
            day = date(2015, 1, 1) + timedelta(days=int(rng.integers(0, 1000)))
            for item in rng.permutation(bought):
                day += timedelta(days=int(rng.integers(1, 30)))
                rating = float(rng.integers(3, 6))
                rows.append((f"U{m}_{u:05d}", f"I{item:05d}", rating, day.isoformat()))
        out[code] = rows
    return world, out


def write_synth(dest: Path, cfg: SynthConfig) -> list[Path]:
    """Write one ``<market>_5core.txt`` per market into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for code, rows in synthesize(cfg).items():
        path = dest / f"{code}_5core.txt"
        lines = ["userId itemId rate date", *(f"{u} {i} {r:.1f} {d}" for u, i, r, d in rows)]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths
