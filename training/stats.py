"""Counts over the raw market files, as ``cmr data stats`` prints them: rows, users,
items, distinct pairs and mean history per market, then over every market at once."""

from __future__ import annotations

from dataclasses import dataclass

from training.market_files import MarketLog


@dataclass(frozen=True, kw_only=True)
class MarketStats:
    """Counts over a market's raw rows, as its file holds them."""

    market: str
    rows: int
    users: int
    items: int
    unique_pairs: int  # distinct (user, item): what remains after de-duplication

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """Rows, users, items and unique pairs, the columns of ``cmr data stats``."""
        return self.rows, self.users, self.items, self.unique_pairs

    @property
    def mean_history(self) -> float:
        return self.rows / self.users

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "market": self.market,
            "rows": self.rows,
            "users": self.users,
            "items": self.items,
            "unique_pairs": self.unique_pairs,
            "mean_history": round(self.mean_history, 4),
        }


def log_stats(logs: list[MarketLog]) -> list[MarketStats]:
    """Per-market counts, then an "all" row that counts distinct ids across markets."""

    def stats(market: str, users: list[str], items: list[str], *, pairs: int) -> MarketStats:
        return MarketStats(
            market=market,
            rows=len(users),
            users=len(set(users)),
            items=len(set(items)),
            unique_pairs=pairs,
        )

    rows = [
        stats(m.market, m.users, m.items, pairs=len(set(zip(m.users, m.items, strict=True))))
        for m in logs
    ]
    all_pairs = {(m.market, u, i) for m in logs for u, i in zip(m.users, m.items, strict=True)}
    all_users = [u for m in logs for u in m.users]
    all_items = [i for m in logs for i in m.items]
    return [*rows, stats("all", all_users, all_items, pairs=len(all_pairs))]
