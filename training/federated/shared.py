"""What every party of a federation holds before it starts, none of it interactions:
the item vocabulary (the company's catalogue, in index order), the market codes,
whether every market's file has dates, and where each market's rows start in the
central row order.

The last two are what a market's own file alone cannot tell it and the central split
needs (training/federated/partition.py ``own_split``): a split draws one random key
per row from one stream seeded by ``seed``, in market order, so a market must know how
many rows the markets before it hold (a count per market, after de-duplication); and
the central data drops every date when one market's file has none. One JSON file,
``shared.json``, written by whoever sets the federation up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.vocab import Vocabulary
from training.data import Interactions


@dataclass(frozen=True, kw_only=True)
class SharedInfo:
    markets: tuple[str, ...]  # market index -> code
    items: Vocabulary
    has_time: bool
    row_offsets: tuple[int, ...]  # market index -> its first row in the central row order

    def __post_init__(self) -> None:
        if len(self.row_offsets) != len(self.markets):
            raise ValueError("shared info: one row offset per market")

    @classmethod
    def from_data(cls, data: Interactions) -> SharedInfo:
        # Rows are sorted by user, and users are numbered market by market.
        counts = np.bincount(data.user_market[data.user], minlength=len(data.markets))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return cls(
            markets=data.markets,
            items=data.items,
            has_time=data.has_time,
            row_offsets=tuple(int(o) for o in offsets),
        )

    def market(self, code: str) -> int:
        if code not in self.markets:
            raise ValueError(f"market {code!r} is not one of {', '.join(self.markets)}")
        return self.markets.index(code)

    def save(self, path: Path) -> None:
        payload = {
            "markets": list(self.markets),
            "items": list(self.items.ids),
            "has_time": self.has_time,
            "row_offsets": list(self.row_offsets),
        }
        path.write_text(json.dumps(payload) + "\n")

    @classmethod
    def load(cls, path: Path) -> SharedInfo:
        try:
            payload = json.loads(path.read_text())
            return cls(
                markets=tuple(payload["markets"]),
                items=Vocabulary(tuple(payload["items"])),
                has_time=bool(payload["has_time"]),
                row_offsets=tuple(int(o) for o in payload["row_offsets"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a federation's shared.json ({exc})") from exc
