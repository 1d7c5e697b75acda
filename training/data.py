"""All markets' interactions as one indexed data set: users, items, times, in order.

The rows come from the market files (training/market_files.py reads them); here
they are de-duplicated per (market, user, item), optionally k-core filtered, and
indexed: items by one vocabulary shared by every market, users per market.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from model_store.vocab import IntArray, Vocabulary
from training.market_files import NO_TIME, MarketLog, read_logs

log = logging.getLogger(__name__)

Duplicates = Literal["first", "last"]


@dataclass(frozen=True, kw_only=True)
class Interactions:
    """All markets' interactions, de-duplicated, sorted by user then time.

    A user is a (market, user id) pair: the same id in two markets is two users.
    """

    markets: tuple[str, ...]  # market index -> code
    items: Vocabulary  # item index (1-based) <-> item id
    user_ids: tuple[str, ...]  # user index -> user id within its market
    user_market: IntArray  # (U,) market index of each user
    user: IntArray  # (R,) user index of each row
    item: IntArray  # (R,) item index of each row
    time: IntArray  # (R,) seconds since the epoch, NO_TIME when unknown
    has_time: bool

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def market_items(self, market: int) -> IntArray:
        """The market's catalogue: sorted indices of every item it has interactions for."""
        return np.unique(self.item[self.user_market[self.user] == market])


def _k_core(user: IntArray, item: IntArray, k: int) -> NDArray[np.bool_]:
    """Rows kept after repeatedly dropping users and items with fewer than k rows."""
    keep = np.ones(len(user), dtype=bool)
    while True:
        user_counts = np.bincount(user[keep], minlength=user.max() + 1)
        item_counts = np.bincount(item[keep], minlength=item.max() + 1)
        drop = keep & ((user_counts[user] < k) | (item_counts[item] < k))
        if not drop.any():
            return keep
        keep &= ~drop


def build_interactions(
    logs: list[MarketLog],
    duplicates: Duplicates = "first",
    k_core: int | None = None,
    *,
    base_items: Vocabulary | None = None,
) -> Interactions:
    """Index the raw logs: one row per (market, user, item), optionally k-core filtered.

    ``base_items``: a published model's vocabulary, kept whole and in its order, with
    the data's new items after it (sorted), so every old item keeps its index and
    its model rows (warm starts, onboarding).

    A user who interacted with an item several times keeps one row, the first
    (``duplicates="first"``, the default: the purchase) or the last in time; a
    repeated pair would otherwise let a held-out item also sit in training.
    The k-core filter runs per market, as XMarket's own 5-core does.
    """
    if not logs:
        raise ValueError("no market logs to build from")
    markets = tuple(m.market for m in logs)
    has_time = all(m.has_time for m in logs)
    vocab = Vocabulary.from_ids(i for m in logs for i in m.items)  # provisional, pre-filter
    if base_items is not None:
        new = Vocabulary.from_ids(set(vocab.ids) - set(base_items.ids)).ids
        vocab = Vocabulary(base_items.ids + new)
    user_ids: list[str] = []
    user_market: list[IntArray] = []
    rows_user: list[IntArray] = []
    rows_item: list[IntArray] = []
    rows_time: list[IntArray] = []
    for market, mlog in enumerate(logs):
        ids, local = np.unique(np.asarray(mlog.users), return_inverse=True)
        item = vocab.lookup(mlog.items)
        times = mlog.times if has_time else np.full(len(item), NO_TIME, np.int64)
        # Sort by (user, time, file order), then keep the first or last of each pair.
        order = np.lexsort((np.arange(len(item)), times, local))
        if duplicates == "last":
            order = order[::-1]
        pairs = local[order].astype(np.int64) * vocab.size + item[order]
        _, first = np.unique(pairs, return_index=True)
        kept = np.sort(order[first])
        u, i, t = local[kept], item[kept], times[kept]
        if k_core is not None:
            mask = _k_core(u, i, k_core)
            u, i, t = u[mask], i[mask], t[mask]
            used, u = np.unique(u, return_inverse=True)
            ids = ids[used]
        offset = len(user_ids)
        user_ids.extend(str(x) for x in ids)
        user_market.append(np.full(len(ids), market, np.int64))
        rows_user.append(u.astype(np.int64) + offset)
        rows_item.append(i)
        rows_time.append(t)
    user = np.concatenate(rows_user)
    time = np.concatenate(rows_time)
    item = np.concatenate(rows_item)
    if base_items is None:
        # Re-index items so the vocabulary holds only items that survived filtering.
        used, item = np.unique(item, return_inverse=True)
        items = Vocabulary(tuple(vocab.ids[j - 1] for j in used))
        item = item.astype(np.int64) + 1
    else:  # the base's items stay, used or not; new items only if they survived
        n_base = len(base_items)
        new_used = np.unique(item[item > n_base])
        items = Vocabulary(base_items.ids + tuple(vocab.ids[j - 1] for j in new_used))
        remap = np.arange(vocab.size, dtype=np.int64)
        remap[new_used] = n_base + 1 + np.arange(len(new_used))
        item = remap[item]
    order = np.lexsort((time, user))  # stable: file order breaks ties in time
    return Interactions(
        markets=markets,
        items=items,
        user_ids=tuple(user_ids),
        user_market=np.concatenate(user_market),
        user=user[order],
        item=item[order],
        time=time[order],
        has_time=has_time,
    )


def load_interactions(
    root: Path,
    duplicates: Duplicates = "first",
    k_core: int | None = None,
    *,
    base_items: Vocabulary | None = None,
) -> Interactions:
    """Read a data folder and index it; see :func:`build_interactions`."""
    logs = read_logs(root)
    data = build_interactions(logs, duplicates=duplicates, k_core=k_core, base_items=base_items)
    log.info(
        "loaded %d interactions, %d users, %d items, markets %s",
        len(data.user),
        data.n_users,
        len(data.items),
        ",".join(data.markets),
    )
    return data
