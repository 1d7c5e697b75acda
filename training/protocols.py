"""Evaluation protocols: which candidates each held-out item is ranked among.

- ``paper``: the positive plus 99 negatives drawn from the global item pool (every
  market's items); the Bert4CMR paper's protocol.
- ``market``: the same, but negatives come from the items sold in the user's market.
- ``full``: the whole market catalogue.
- ``file``: candidates read from a file (training/candidate_file.py), taken as given.

No candidate but the positive is an item the user interacted with: not its
history, nor its other held-out item (ranking the validation item hides the test
item too, as a known future purchase). Negatives depend only on (seed, protocol,
split, market, user order), so every model ranks identical candidates. In a
candidate row, column 0 is the positive and PAD marks an empty slot (a pool too
small for all negatives, or, under ``full``, an item the user has).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from model_store.vocab import PAD, IntArray, find_sorted, pad_rows
from training.split import Split, SplitName

Protocol = Literal["paper", "market", "full"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
# What an EvalSet was built by: a protocol above, or a candidates file.
SetProtocol = Protocol | Literal["file"]
N_NEGATIVES = 99


@dataclass(frozen=True, kw_only=True)
class EvalBatch:
    """One model call's input: users of one market, in the scoring contract's shapes."""

    market: int
    rows: slice  # which rows of the EvalSet these are
    histories: IntArray  # (B, N) oldest first, right-padded with PAD
    candidates: IntArray  # (B, C) column 0 = the positive
    markets: IntArray  # (B,)
    users: IntArray  # (B,) user indices, for models that embed users (NeuMF)


@dataclass(frozen=True, kw_only=True)
class EvalSet:
    """Users with a held-out item in ``split``, grouped by market, and their candidates."""

    split: Split
    protocol: SetProtocol
    split_name: SplitName
    seed: int
    users: IntArray  # (B,) sorted by market
    market: IntArray  # (B,)
    positive: IntArray  # (B,)
    history_ptr: IntArray  # (B + 1,) CSR into history_items
    history_items: IntArray
    other_held_out: IntArray  # (B,) the user's other held-out item: never a candidate
    negatives: IntArray  # (B, n_negatives), PAD-padded; (B, 0) under `full`; the file's rest
    catalogues: tuple[IntArray, ...]  # per market: sorted item indices sold there

    @property
    def markets(self) -> tuple[str, ...]:
        return self.split.data.markets

    def __len__(self) -> int:
        return len(self.users)

    def history(self, row: int) -> IntArray:
        return self.history_items[self.history_ptr[row] : self.history_ptr[row + 1]]

    def market_rows(self, market: int) -> slice:
        start, stop = np.searchsorted(self.market, [market, market + 1])
        return slice(int(start), int(stop))

    def keep(self, rows: NDArray[np.bool_]) -> EvalSet:
        """The rows where ``rows`` is True, in their order (so still grouped by market)."""
        kept = np.flatnonzero(rows)
        history_ptr, history_items = stack_histories([self.history(int(r)) for r in kept])
        return replace(
            self,
            users=self.users[kept],
            market=self.market[kept],
            positive=self.positive[kept],
            history_ptr=history_ptr,
            history_items=history_items,
            other_held_out=self.other_held_out[kept],
            negatives=self.negatives[kept],
        )

    def candidates(self, rows: slice) -> IntArray:
        """(B, C) candidates of consecutive rows of one market; column 0 = positive."""
        positive = self.positive[rows, None]
        if self.protocol != "full":
            return np.concatenate([positive, self.negatives[rows]], axis=1)
        catalogue = self.catalogues[int(self.market[rows.start])]
        ranked = np.tile(catalogue, (len(positive), 1))
        for r, row in enumerate(range(rows.start, rows.stop)):
            known = np.concatenate([self.history(row), positive[r], self.other_held_out[[row]]])
            at, found = find_sorted(catalogue, known)
            ranked[r, at[found]] = PAD
        return np.concatenate([positive, ranked], axis=1)

    def batches(
        self, batch_size: int = 512, markets: Iterable[int] | None = None
    ) -> Iterator[EvalBatch]:
        """Batches of at most ``batch_size`` users, never mixing markets."""
        for market in range(len(self.markets)) if markets is None else markets:
            span = self.market_rows(market)
            for start in range(span.start, span.stop, batch_size):
                rows = slice(start, min(start + batch_size, span.stop))
                yield EvalBatch(
                    market=market,
                    rows=rows,
                    histories=pad_rows([self.history(r) for r in range(rows.start, rows.stop)]),
                    candidates=self.candidates(rows),
                    markets=self.market[rows],
                    users=self.users[rows],
                )


def market_catalogues(split: Split) -> tuple[IntArray, ...]:
    """Items sold in each market: every item with an interaction there, in any split."""
    return tuple(split.data.market_items(m) for m in range(len(split.data.markets)))


def stack_histories(histories: Sequence[IntArray]) -> tuple[IntArray, IntArray]:
    """CSR form of per-row histories: (B + 1,) pointers and the items end to end."""
    ptr = np.zeros(len(histories) + 1, np.int64)
    ptr[1:] = np.cumsum([len(h) for h in histories])
    items = np.concatenate(histories) if len(histories) else np.zeros(0, np.int64)
    return ptr, items.astype(np.int64)


def _sample(rng: np.random.Generator, pool: IntArray, *, exclude: IntArray, n: int) -> IntArray:
    """n distinct pool items not in ``exclude``, uniformly; PAD-padded if the pool is short."""
    # Draw enough distinct positions that, after dropping excluded items, n remain.
    draw = rng.choice(len(pool), size=min(len(pool), n + len(exclude)), replace=False)
    picked = pool[draw]
    picked = picked[~np.isin(picked, exclude)][:n]
    return np.pad(picked, (0, n - len(picked)), constant_values=PAD)


def build_eval_set(
    split: Split,
    protocol: Protocol,
    split_name: SplitName = "test",
    *,
    seed: int = 0,
    n_negatives: int = N_NEGATIVES,
) -> EvalSet:
    """The candidates of every user with a held-out item; deterministic given the seed."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    data = split.data
    held_out = split.held_out(split_name)
    other = split.held_out("test" if split_name == "valid" else "valid")
    users = np.flatnonzero(held_out != PAD)
    users = users[np.argsort(data.user_market[users], kind="stable")]
    market = data.user_market[users]
    histories = [split.eval_history(int(u), split_name) for u in users]
    catalogues = market_catalogues(split)
    width = 0 if protocol == "full" else n_negatives
    negatives = np.full((len(users), width), PAD, np.int64)
    if width:
        protocol_code, split_code = PROTOCOLS.index(protocol), ("valid", "test").index(split_name)
        # Drawn in item-id order: a warm-started run's vocabulary (old items first)
        # then draws what a cold run's (sorted by id) draws.
        ids = np.asarray(data.items.ids, dtype=object)
        by_id = np.argsort(ids, kind="stable").astype(np.int64) + 1  # every item, id order
        for m in range(len(data.markets)):
            rng = np.random.default_rng([seed, protocol_code, split_code, m])
            sold = catalogues[m]
            pool = by_id if protocol == "paper" else sold[np.argsort(ids[sold - 1], kind="stable")]
            for row in np.flatnonzero(market == m):
                user = users[row]
                exclude = np.concatenate([histories[row], [held_out[user], other[user]]])
                negatives[row] = _sample(rng, pool, exclude=exclude, n=n_negatives)
    history_ptr, history_items = stack_histories(histories)
    return EvalSet(
        split=split,
        protocol=protocol,
        split_name=split_name,
        seed=seed,
        users=users,
        market=market,
        positive=held_out[users],
        history_ptr=history_ptr,
        history_items=history_items,
        other_held_out=other[users],
        negatives=negatives,
        catalogues=catalogues,
    )


def at_most(valid: EvalSet, per_market: int, *, seed: int = 0) -> EvalSet:
    """``valid`` with at most ``per_market`` users of each market, drawn at random."""
    keep = np.zeros(len(valid), dtype=bool)
    rng = np.random.default_rng(seed)
    for m in range(len(valid.markets)):
        rows = valid.market_rows(m)
        n = rows.stop - rows.start
        drawn = rng.choice(n, size=min(n, per_market), replace=False)
        keep[rows.start + drawn] = True
    return valid if keep.all() else valid.keep(keep)
