"""Candidates from a file: rank each listed user's held-out item among the items given.

Two tab-separated files, no header, blank lines ignored:

- candidates: ``<user id>\\t<item id>,<item id>,...``, one row per user;
- held-out: ``<user id>\\t<item id>``, the item to rank for each user.

Ids are the raw ids of the data folder's market files. A user is a (market, user id)
pair (training/data.py), so an id is looked up in every market, or only in ``market``
when one is given; an id found in several markets is ambiguous. Each row becomes one
EvalSet row: the held-out item in column 0, then the file's candidates, de-duplicated
and without the held-out item, taken as given (no history filtering, unlike the
built-in protocols). The history is what ``cmr evaluate`` gives for the split.
Malformed rows are errors; rows that cannot be scored on this data are skipped and
counted by reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.vocab import PAD, IntArray, pad_rows
from training.market_files import DataFormatError
from training.protocols import EvalSet, market_catalogues, stack_histories
from training.split import Split, SplitName

# Why a row was skipped: the keys of the count ``eval_set_from_candidates`` returns.
UNKNOWN_USER = "unknown user"
AMBIGUOUS_USER = "user in several markets (give --market)"
NO_HELD_OUT = "no held-out item in the held-out file"
UNKNOWN_HELD_OUT = "held-out item not among known items"
UNKNOWN_CANDIDATE = "candidate item not among known items"
HELD_OUT_IN_HISTORY = "held-out item in the user's history"
NO_CANDIDATES = "no candidate besides the held-out item"


@dataclass(frozen=True, kw_only=True)
class CandidateRow:
    """One row of a candidates file."""

    line: int
    user: str
    items: tuple[str, ...]


def _rows(path: Path) -> list[tuple[int, str, str]]:
    """(line, first, second) of each non-blank line with exactly two non-empty columns."""
    rows: list[tuple[int, str, str]] = []
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            text = raw.rstrip("\r\n")
            if not text.strip():
                continue
            columns = text.split("\t")
            if len(columns) != 2:
                raise DataFormatError(
                    path, f"expected 2 tab-separated columns, found {len(columns)}", number
                )
            first, second = (c.strip() for c in columns)
            if not first:
                raise DataFormatError(path, "empty user id", number)
            if not second:
                raise DataFormatError(path, "empty item id", number)
            rows.append((number, first, second))
    return rows


def _unique_users(path: Path, rows: list[tuple[int, str, str]]) -> None:
    """Refuse a user listed twice: which row would count is not ours to guess."""
    first_line: dict[str, int] = {}
    for number, user, _ in rows:
        if user in first_line:
            raise DataFormatError(
                path, f"user {user!r} listed again (first on line {first_line[user]})", number
            )
        first_line[user] = number


def read_candidates(path: Path) -> list[CandidateRow]:
    """The rows of a candidates file; DataFormatError (file:line) on a malformed row."""
    rows = _rows(path)
    _unique_users(path, rows)
    out: list[CandidateRow] = []
    for number, user, items in rows:
        ids = tuple(i.strip() for i in items.split(","))
        if not all(ids):
            raise DataFormatError(path, "empty item id in the candidate list", number)
        out.append(CandidateRow(line=number, user=user, items=ids))
    return out


def read_held_out(path: Path) -> dict[str, str]:
    """User id -> held-out item id; DataFormatError (file:line) on a malformed row."""
    rows = _rows(path)
    _unique_users(path, rows)
    return {user: item for _, user, item in rows}


def _user_index(split: Split, market: str | None) -> dict[str, list[int]]:
    """User id -> the user indices (one per market) it names, limited to ``market``."""
    data = split.data
    wanted = None
    if market is not None:
        if market not in data.markets:
            raise ValueError(f"unknown market {market!r}; the data has {', '.join(data.markets)}")
        wanted = data.markets.index(market)
    index: dict[str, list[int]] = {}
    for user, (user_id, m) in enumerate(zip(data.user_ids, data.user_market, strict=True)):
        if wanted is None or m == wanted:
            index.setdefault(user_id, []).append(user)
    return index


def eval_set_from_candidates(
    split: Split,
    rows: list[CandidateRow],
    held_out: dict[str, str],
    *,
    split_name: SplitName = "test",
    market: str | None = None,
    seed: int = 0,
) -> tuple[EvalSet, Counter[str]]:
    """An EvalSet of the rows that can be scored, and the skipped rows counted by reason.

    ValueError if no row can be scored.
    """
    users_by_id = _user_index(split, market)
    vocab = split.data.items
    skipped: Counter[str] = Counter()
    # (user, positive, its history, the rest of the candidates)
    kept: list[tuple[int, int, IntArray, IntArray]] = []
    for row in rows:
        found = users_by_id.get(row.user, [])
        item_id = held_out.get(row.user)
        if not found:
            skipped[UNKNOWN_USER] += 1
            continue
        if len(found) > 1:
            skipped[AMBIGUOUS_USER] += 1
            continue
        user = found[0]
        if item_id is None:
            skipped[NO_HELD_OUT] += 1
            continue
        if item_id not in vocab:
            skipped[UNKNOWN_HELD_OUT] += 1
            continue
        candidates = vocab.lookup(row.items)
        if (candidates == PAD).any():
            skipped[UNKNOWN_CANDIDATE] += 1
            continue
        positive = vocab.index(item_id)
        history = split.eval_history(user, split_name)
        # Ranking an item the model was shown as history would measure recall of input.
        if positive in history:
            skipped[HELD_OUT_IN_HISTORY] += 1
            continue
        _, first = np.unique(candidates, return_index=True)
        rest = candidates[np.sort(first)]  # de-duplicated, in file order
        rest = rest[rest != positive]
        if not len(rest):
            skipped[NO_CANDIDATES] += 1
            continue
        kept.append((user, positive, history, rest))
    if not kept:
        reasons = f" ({describe_skipped(skipped)})" if skipped else ""
        raise ValueError(f"no usable row in the candidates file{reasons}")
    data = split.data
    # EvalSet rows are grouped by market; within one, file order.
    kept.sort(key=lambda k: int(data.user_market[k[0]]))
    users = np.array([k[0] for k in kept], np.int64)
    other = split.held_out("test" if split_name == "valid" else "valid")
    history_ptr, history_items = stack_histories([k[2] for k in kept])
    eval_set = EvalSet(
        split=split,
        protocol="file",
        split_name=split_name,
        seed=seed,
        users=users,
        market=data.user_market[users],
        positive=np.array([k[1] for k in kept], np.int64),
        history_ptr=history_ptr,
        history_items=history_items,
        other_held_out=other[users],
        negatives=pad_rows([k[3] for k in kept]),
        catalogues=market_catalogues(split),
    )
    return eval_set, skipped


def describe_skipped(skipped: Counter[str]) -> str:
    """``skipped 3 rows: 2 unknown user, 1 held-out item not among known items``."""
    total = sum(skipped.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    return f"skipped {total} row{'s' if total != 1 else ''}: {reasons}"


def load_candidate_set(
    split: Split,
    *,
    candidates: Path,
    held_out: Path,
    split_name: SplitName = "test",
    market: str | None = None,
    seed: int = 0,
) -> tuple[EvalSet, Counter[str]]:
    """Read both files and build their EvalSet; see :func:`eval_set_from_candidates`."""
    return eval_set_from_candidates(
        split,
        read_candidates(candidates),
        read_held_out(held_out),
        split_name=split_name,
        market=market,
        seed=seed,
    )
