"""Per-market catalogues: which items a market sells, most popular first.

The service scores a market's catalogue when a request names no candidates and
falls back to its popularity order for a user without history, so the exporter
stores both: item indices (the vocabulary's) and their interaction counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.vocab import PAD, IntArray


@dataclass(frozen=True)
class Catalogue:
    """One market's items, most interactions first (ties: lower index first)."""

    items: IntArray  # (I,) item indices
    counts: IntArray  # (I,) interactions with each

    def __post_init__(self) -> None:
        if self.items.shape != self.counts.shape or self.items.ndim != 1:
            raise ValueError("catalogue items and counts must be 1-d arrays of one length")
        if len(self.items) and int(self.items.min()) <= PAD:
            raise ValueError("catalogue items must be real item indices (>= 1)")

    @classmethod
    def from_interactions(cls, items: IntArray) -> Catalogue:
        """From the item index of each of the market's interactions."""
        ids, counts = np.unique(items, return_counts=True)
        order = np.lexsort((ids, -counts))
        return cls(ids[order].astype(np.int64), counts[order].astype(np.int64))

    @classmethod
    def pooled(cls, catalogues: Iterable[Catalogue]) -> Catalogue:
        """Every item of ``catalogues`` with its counts summed over them."""
        parts = list(catalogues)
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))
        ids, at = np.unique(np.concatenate([c.items for c in parts]), return_inverse=True)
        counts = np.zeros(len(ids), np.int64)
        np.add.at(counts, at, np.concatenate([c.counts for c in parts]))
        order = np.lexsort((ids, -counts))
        return cls(ids[order].astype(np.int64), counts[order].astype(np.int64))

    def __len__(self) -> int:
        return len(self.items)


def save_catalogues(catalogues: Mapping[str, Catalogue], path: Path) -> None:
    payload = {
        code: {"items": c.items.tolist(), "counts": c.counts.tolist()}
        for code, c in catalogues.items()
    }
    path.write_text(json.dumps(payload))


def load_catalogues(path: Path) -> dict[str, Catalogue]:
    payload = json.loads(path.read_text())
    return {
        code: Catalogue(
            np.asarray(entry["items"], dtype=np.int64), np.asarray(entry["counts"], dtype=np.int64)
        )
        for code, entry in payload.items()
    }
