"""Leave-one-out splits per (market, user): the held-out items every model is judged on.

Each user with at least three interactions gives one test item and one validation
item; everything else is training. Users with fewer stay in training only, so the
models still learn from them. Two schemes:

- ``random``: the paper's; the two held-out items are drawn at random (seeded).
- ``temporal``: the latest interaction is the test item, the one before it the
  validation item (ties in time broken by file order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from model_store.vocab import PAD, IntArray
from training.data import Interactions

Scheme = Literal["random", "temporal"]
SplitName = Literal["valid", "test"]
MIN_INTERACTIONS = 3


@dataclass(frozen=True, kw_only=True)
class Split:
    """Training rows in CSR form per user, plus each user's held-out items.

    ``train_items[train_ptr[u]:train_ptr[u + 1]]`` is user u's training history,
    oldest first (file order when the data has no dates).
    """

    data: Interactions
    scheme: Scheme
    seed: int
    train_ptr: IntArray  # (U + 1,)
    train_items: IntArray  # (R_train,)
    train_time: IntArray  # (R_train,) seconds since the epoch, NO_TIME when unknown
    valid: IntArray  # (U,) validation item per user, PAD if none
    test: IntArray  # (U,) test item per user, PAD if none

    def history(self, user: int) -> IntArray:
        return self.train_items[self.train_ptr[user] : self.train_ptr[user + 1]]

    def train_users(self) -> IntArray:
        """(R_train,) user index of every training row, aligned with ``train_items``."""
        return np.repeat(np.arange(self.data.n_users), np.diff(self.train_ptr))

    def held_out(self, split: SplitName) -> IntArray:
        return self.valid if split == "valid" else self.test

    def eval_history(self, user: int, split: SplitName) -> IntArray:
        """What a model may see when predicting the user's ``split`` item.

        At test time the validation item has happened, so it joins the history
        (as the newest item); at validation time only training items are known.
        """
        history = self.history(user)
        if split == "test" and self.valid[user] != PAD:
            return np.append(history, self.valid[user])
        return history


def make_split(
    data: Interactions, scheme: Scheme = "random", seed: int = 0, *, row_offset: int = 0
) -> Split:
    """Split every user's rows; the same data, scheme and seed give the same split.

    ``row_offset``: where ``data``'s rows start in a larger data set's row order. The
    random scheme draws one key per row from one stream, so one market's rows alone,
    split from its offset, are split exactly as the whole data's split splits them
    (training/federated/partition.py ``own_split``)."""
    n_rows = len(data.user)
    if scheme == "random":
        bits = np.random.PCG64(seed)  # default_rng(seed)'s generator
        bits.advance(row_offset)  # one 64-bit draw per float64 key
        key = np.random.Generator(bits).random(n_rows)
    elif scheme == "temporal":
        if not data.has_time:
            raise ValueError("a temporal split needs timestamps, and this data has none")
        key = np.arange(n_rows, dtype=np.float64)  # rows are sorted by (user, time, file order)
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; choose random or temporal")
    order = np.lexsort((key, data.user))  # per user, by key: the last row is the test item
    counts = np.bincount(data.user, minlength=data.n_users)
    ends = np.cumsum(counts)  # one past each user's last row in `order`
    eligible = counts >= MIN_INTERACTIONS
    test_rows = order[ends[eligible] - 1]
    valid_rows = order[ends[eligible] - 2]
    test = np.full(data.n_users, PAD, np.int64)
    valid = np.full(data.n_users, PAD, np.int64)
    test[data.user[test_rows]] = data.item[test_rows]
    valid[data.user[valid_rows]] = data.item[valid_rows]
    in_train = np.ones(n_rows, dtype=bool)
    in_train[test_rows] = False
    in_train[valid_rows] = False
    # data rows are already sorted by (user, time), so the mask keeps histories in order.
    train_users = data.user[in_train]
    train_ptr = np.zeros(data.n_users + 1, np.int64)
    train_ptr[1:] = np.cumsum(np.bincount(train_users, minlength=data.n_users))
    return Split(
        data=data,
        scheme=scheme,
        seed=seed,
        train_ptr=train_ptr,
        train_items=data.item[in_train],
        train_time=data.time[in_train],
        valid=valid,
        test=test,
    )


def every_row(data: Interactions) -> Split:
    """Every row in training and nothing held out: what a model to publish is refitted
    on once its settings are chosen on a split."""
    counts = np.bincount(data.user, minlength=data.n_users)
    train_ptr = np.zeros(data.n_users + 1, np.int64)
    train_ptr[1:] = np.cumsum(counts)
    nothing = np.full(data.n_users, PAD, np.int64)
    return Split(
        data=data,
        scheme="random",
        seed=0,
        train_ptr=train_ptr,
        train_items=data.item.copy(),  # rows are sorted by (user, time) already
        train_time=data.time.copy(),
        valid=nothing,
        test=nothing.copy(),
    )
