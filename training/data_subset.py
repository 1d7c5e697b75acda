"""Part of a data folder as a new one: some markets, each without its newest rows.

What the close-the-loop experiments need (docs/results.md): the data as it was some
days ago (each market's newest share of rows dropped, by date), the markets without
one of them, or one market alone; and the data without each user's newest item (what
a temporal split of the whole data then tests a model on: the refit check). Rows are
written as they were read (file order), one ``<market>.tsv`` per market with the
header ``user item timestamp`` (epoch seconds), which training/market_files.py reads
back to the same interactions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model_store.vocab import IntArray
from training.market_files import MarketLog, read_logs
from training.split import MIN_INTERACTIONS


def newest_dropped(log: MarketLog, fraction: float) -> MarketLog:
    """``log`` without its newest ``fraction`` of rows (ties in time: later rows in
    the file count as newer)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--drop-newest must be in [0, 1), got {fraction}")
    if fraction and not log.has_time:
        raise ValueError(f"{log.path}: no timestamps, so there are no newest rows to drop")
    n = len(log.users)
    dropped = math.ceil(fraction * n)
    order = np.lexsort((np.arange(n), log.times))  # oldest first, file order in ties
    keep = np.zeros(n, dtype=bool)
    keep[order[: n - dropped]] = True
    return _rows(log, np.flatnonzero(keep))


def each_users_newest_dropped(log: MarketLog) -> MarketLog:
    """``log`` without each user's newest item, for users with at least MIN_INTERACTIONS
    items: the items a temporal split of the whole log tests on. As loading does, a
    repeated purchase counts at its first time (ties: the earlier row in the file), so
    every row of the dropped (user, item) goes, repeats included."""
    if not log.has_time:
        raise ValueError(f"{log.path}: no timestamps, so users have no newest rows to drop")
    n = len(log.users)
    users = np.unique(np.asarray(log.users, dtype=object), return_inverse=True)[1]
    items = np.unique(np.asarray(log.items, dtype=object), return_inverse=True)[1]
    order = np.lexsort((np.arange(n), log.times, users))  # per user, oldest first
    pair = users * (items.max() + 1) + items
    _, first_at = np.unique(pair[order], return_index=True)  # each pair's first row
    firsts = order[np.sort(first_at)]  # still per user, oldest first
    counts = np.bincount(users[firsts], minlength=users.max() + 1)
    newest = firsts[np.cumsum(counts)[counts > 0] - 1]  # each user's newest first purchase
    newest = newest[counts[users[newest]] >= MIN_INTERACTIONS]
    return _rows(log, np.flatnonzero(~np.isin(pair, pair[newest])))


def _rows(log: MarketLog, rows: IntArray) -> MarketLog:
    return MarketLog(
        market=log.market,
        path=log.path,
        users=[log.users[i] for i in rows],
        items=[log.items[i] for i in rows],
        ratings=log.ratings[rows],
        times=log.times[rows],
    )


def write_subset(
    source: Path,
    dest: Path,
    *,
    markets: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    drop_newest: float = 0.0,
    drop_user_newest: bool = False,
) -> list[Path]:
    """Write ``markets`` (default: every one) of ``source`` but ``exclude`` into
    ``dest``, each without its newest ``drop_newest`` share of rows and, with
    ``drop_user_newest``, without each user's newest row."""
    logs = {log.market: log for log in read_logs(source)}
    unknown = sorted((set(markets or ()) | set(exclude)) - set(logs))
    if unknown:
        have = ", ".join(logs)
        raise ValueError(f"{source} has no market(s) {', '.join(unknown)}; it has {have}")
    chosen = [m for m in (markets or logs) if m not in exclude]
    if not chosen:
        raise ValueError("no market left to write")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for code in chosen:
        log = newest_dropped(logs[code], drop_newest)
        log = each_users_newest_dropped(log) if drop_user_newest else log
        path = dest / f"{code}.tsv"
        written.append(path)
        if any("\t" in x or "\n" in x for x in (*log.users, *log.items)):
            raise ValueError(f"{log.path}: an id holds a tab or a line break")
        with path.open("w", encoding="utf-8") as f:
            if not log.has_time:
                rows = [("user", "item"), *zip(log.users, log.items, strict=True)]
                f.writelines(f"{u}\t{i}\n" for u, i in rows)
                continue
            f.write("user\titem\ttimestamp\n")
            for user, item, when in zip(log.users, log.items, log.times.tolist(), strict=True):
                f.write(f"{user}\t{item}\t{when}\n")
    return written
