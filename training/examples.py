"""Training examples for Bert4CMR, without leakage, and their batches.

Each training interaction (user, target) becomes one positive example whose
history is the user's *other* training items, the most recent ``max_history``
of them: the target is never in its own input. Every epoch draws fresh
negatives for each positive from the items the user has not bought in
training, sharing the positive's history. Batches group examples of similar
history length so padding stays small.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from model_store.vocab import PAD, IntArray, find_sorted
from training.protocols import market_catalogues
from training.split import Split

NegativePool = Literal["market", "global"]


@dataclass(frozen=True, kw_only=True)
class Examples:
    """One row per training positive."""

    user: IntArray  # (E,)
    market: IntArray  # (E,)
    target: IntArray  # (E,)
    history: IntArray  # (E, H) oldest first, right-padded with PAD
    length: IntArray  # (E,) real items in each history

    def __len__(self) -> int:
        return len(self.target)


def build_examples(
    split: Split, max_history: int = 50, markets: Sequence[int] | None = None
) -> Examples:
    """Every training interaction of the users of ``markets`` (default all) as a positive."""
    data = split.data
    wanted = np.isin(
        data.user_market, list(range(len(data.markets))) if markets is None else markets
    )
    users, targets, rows, lengths = [], [], [], []
    for u in np.flatnonzero(wanted):
        items = split.history(int(u))
        n = len(items)
        if n < 2:  # no other item to predict from
            continue
        # Row j is the user's items without item j, oldest first: (n, n - 1).
        others = np.broadcast_to(items, (n, n))[~np.eye(n, dtype=bool)].reshape(n, n - 1)
        others = others[:, -max_history:]  # the most recent ones
        users.append(np.full(n, u))
        targets.append(items)
        rows.append(np.pad(others, ((0, 0), (0, max_history - others.shape[1]))))
        lengths.append(np.full(n, others.shape[1]))
    if not users:
        raise ValueError("no training examples: every user has fewer than 2 training items")
    user = np.concatenate(users).astype(np.int64)
    return Examples(
        user=user,
        market=data.user_market[user],
        target=np.concatenate(targets),
        history=np.concatenate(rows).astype(np.int64),
        length=np.concatenate(lengths).astype(np.int64),
    )


class NegativeSampler:
    """Draws items a user has not bought in training, from its market's items or all items."""

    def __init__(self, split: Split, pool: NegativePool = "market") -> None:
        data = split.data
        self.n_items = data.items.size
        if pool == "market":
            self.pools = list(market_catalogues(split))
        elif pool == "global":
            everything = np.arange(1, data.items.size, dtype=np.int64)
            self.pools = [everything] * len(data.markets)
        else:
            raise ValueError(f"unknown negative pool {pool!r}; choose market or global")
        # Sorted (user, item) keys of every training row, for fast membership tests.
        self.bought = np.unique(split.train_users() * self.n_items + split.train_items)

    def _bought(self, users: IntArray, items: IntArray) -> NDArray[np.bool_]:
        return find_sorted(self.bought, users * self.n_items + items)[1]

    def sample(self, rng: np.random.Generator, examples: Examples, k: int) -> IntArray:
        """(E, k) negatives; a user whose market has nothing left unbought gets PAD."""
        out = np.full((len(examples), k), PAD, np.int64)
        for m, pool in enumerate(self.pools):
            rows = np.flatnonzero(examples.market == m)
            if not len(rows):
                continue
            users = np.repeat(examples.user[rows], k).reshape(-1, k)
            draw = pool[rng.integers(0, len(pool), size=(len(rows), k))]
            for _ in range(50):  # re-draw collisions; a handful of rounds suffices
                clash = self._bought(users, draw)
                if not clash.any():
                    break
                draw[clash] = pool[rng.integers(0, len(pool), size=int(clash.sum()))]
            draw[self._bought(users, draw)] = PAD
            out[rows] = draw
        return out


@dataclass(frozen=True)
class Batch:
    """Positive in column 0 of ``candidates``, negatives after it."""

    histories: IntArray  # (B, N)
    candidates: IntArray  # (B, 1 + k)
    markets: IntArray  # (B,)


def batches(
    rng: np.random.Generator, examples: Examples, negatives: IntArray, *, batch_size: int
) -> Iterator[Batch]:
    """Batches of examples of similar history length, in random order."""
    # Sort by length with random tie-breaks, cut into batches, shuffle the batches.
    order = np.lexsort((rng.random(len(examples)), examples.length))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in (chunks[i] for i in rng.permutation(len(chunks))):
        width = max(int(examples.length[chunk].max()), 1)
        yield Batch(
            histories=examples.history[chunk, :width],
            candidates=np.concatenate([examples.target[chunk, None], negatives[chunk]], axis=1),
            markets=examples.market[chunk],
        )
