"""Item vocabulary and history padding: the id <-> index mapping both halves share.

Training builds the vocabulary, the model store saves it beside every export, and
the service loads it to turn a user's item ids into the int64 arrays a scoring
graph takes. Index 0 is padding everywhere, so real items start at 1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

PAD = 0
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Vocabulary:
    """Item ids in index order: ``ids[i - 1]`` is the item at index ``i``."""

    ids: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {item: i + 1 for i, item in enumerate(self.ids)}
        if len(index) != len(self.ids):
            raise ValueError("vocabulary ids must be unique")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_ids(cls, ids: Iterable[str]) -> Vocabulary:
        """Sorted, so the same set of items always gets the same indices."""
        return cls(tuple(sorted(set(ids))))

    @property
    def size(self) -> int:
        """Number of indices including padding: the rows of an embedding table."""
        return len(self.ids) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def index(self, item: str) -> int:
        """Index of one item; ``KeyError`` if unknown."""
        return self._index[item]

    def lookup(self, items: Iterable[str]) -> IntArray:
        """Indices of many items; unknown items map to padding (and so are ignored)."""
        return np.array(list(self.indices(items)), dtype=np.int64)

    def indices(self, items: Iterable[str]) -> Iterator[int]:
        """``lookup`` one index at a time, for a caller that filters as it goes."""
        return map(self._index.get, items, repeat(PAD))

    def item(self, index: int) -> str:
        if not 1 <= index <= len(self.ids):
            raise IndexError(f"item index {index} outside 1..{len(self.ids)}")
        return self.ids[index - 1]

    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"items": list(self.ids)}))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(tuple(json.loads(path.read_text())["items"]))


def find_sorted(values: IntArray, queries: IntArray) -> tuple[IntArray, NDArray[np.bool_]]:
    """Positions of ``queries`` in the sorted, non-empty ``values``, and which are there.

    Where a query is absent its position is a valid index holding another value.
    """
    at = np.minimum(np.searchsorted(values, queries), len(values) - 1)
    return at, values[at] == queries


def pad_rows(rows: Sequence[Sequence[int] | IntArray], max_len: int | None = None) -> IntArray:
    """Right-padded int64 matrix (B, N) of item-index rows: histories (oldest first) or
    candidate lists.

    A row longer than ``max_len`` keeps its last ``max_len`` items (a history's most
    recent). N is the longest (kept) row, at least 1, so an all-empty batch is valid input.
    """
    kept = [np.asarray(h, dtype=np.int64) for h in rows]
    if max_len is not None:
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        kept = [h[-max_len:] if len(h) > max_len else h for h in kept]
    width = max((len(h) for h in kept), default=0)
    out = np.full((len(kept), max(width, 1)), PAD, dtype=np.int64)
    for row, h in enumerate(kept):
        out[row, : len(h)] = h
    return out


def recent_histories(histories: IntArray, max_len: int) -> IntArray:
    """Right-padded (B, N) histories, oldest first -> (B, min(N, max_len)) keeping each
    row's most recent ``max_len`` real items, still oldest first and right-padded."""
    if histories.shape[1] <= max_len:
        return histories
    lengths = (histories != PAD).sum(axis=1)
    start = np.maximum(lengths - max_len, 0)[:, None]  # (B, 1)
    cols = start + np.arange(max_len)[None, :]  # (B, max_len)
    kept = np.take_along_axis(histories, np.minimum(cols, histories.shape[1] - 1), axis=1)
    return np.where(cols < lengths[:, None], kept, PAD)
