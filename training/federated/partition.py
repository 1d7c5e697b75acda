"""A market's own share of a split: what one client of a federation holds.

The simulation partitions the central split (``market_split``); a deployed client
reads its own file alone (``own_split``) and gets the same share, given what every
party holds (training/federated/shared.py). Either way every client's held-out items and
candidates are exactly those the centrally trained models and the baselines are
judged on: ``build_eval_set`` draws a market's negatives from that market's users
and catalogue alone, in user order, which the partition keeps. Market indices and
the item vocabulary (the company's catalogue, not interaction data) stay global.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from training.data import Interactions, build_interactions
from training.federated.shared import SharedInfo
from training.market_files import NO_TIME, read_market_file
from training.split import Scheme, Split, make_split


def market_split(split: Split, market: int) -> Split:
    """The users of ``market`` (renumbered in their order), their rows and held-out
    items; every other market has no users."""
    data = split.data
    users = np.flatnonzero(data.user_market == market)
    new_index = np.full(data.n_users, -1, np.int64)
    new_index[users] = np.arange(len(users))
    rows = np.isin(data.user, users)
    part = Interactions(
        markets=data.markets,
        items=data.items,
        user_ids=tuple(data.user_ids[u] for u in users),
        user_market=data.user_market[users],
        user=new_index[data.user[rows]],
        item=data.item[rows],
        time=data.time[rows],
        has_time=data.has_time,
    )
    lengths = np.diff(split.train_ptr)[users]
    train_ptr = np.zeros(len(users) + 1, np.int64)
    train_ptr[1:] = np.cumsum(lengths)
    keep = np.repeat(np.isin(np.arange(data.n_users), users), np.diff(split.train_ptr))
    return replace(
        split,
        data=part,
        train_ptr=train_ptr,
        train_items=split.train_items[keep],
        train_time=split.train_time[keep],
        valid=split.valid[users],
        test=split.test[users],
    )


def own_split(path: Path, code: str, shared: SharedInfo, *, scheme: Scheme, seed: int) -> Split:
    """Market ``code``'s split from its own file ``path`` alone: what ``market_split``
    gives it from the central split of every market's files."""
    market = shared.market(code)
    own = read_market_file(path, code)
    if not shared.has_time:  # the central data drops every date when one market has none
        own = replace(own, times=np.full(len(own.items), NO_TIME, np.int64))
    elif not own.has_time:
        raise ValueError(f"{path}: no dates, but the shared info says every market has them")
    data = build_interactions([own], base_items=shared.items)
    if len(data.items) != len(shared.items):
        raise ValueError(f"{path}: items outside the shared vocabulary")
    data = replace(
        data, markets=shared.markets, user_market=np.full(data.n_users, market, np.int64)
    )
    return make_split(data, scheme, seed, row_offset=shared.row_offsets[market])
