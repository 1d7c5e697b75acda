"""Indexing the interactions: de-duplication, k-core, users per market; the vocabulary
and history padding it is built on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.vocab import PAD, Vocabulary, find_sorted, pad_rows, recent_histories
from tests.training.test_market_files import write
from training.data import build_interactions, load_interactions
from training.market_files import read_logs
from training.stats import log_stats


def test_repeated_pairs_keep_one_row(tmp_path: Path) -> None:
    write(
        tmp_path / "de_5core.txt",
        "userId itemId rate date\nu A 5 2016-03-01\nu B 5 2016-02-01\nu A 4 2016-01-01\n",
    )
    logs = read_logs(tmp_path)
    first = build_interactions(logs, duplicates="first")
    last = build_interactions(logs, duplicates="last")
    a = first.items.index("A")
    assert len(first.user) == len(last.user) == 2
    # Rows are ordered by time within a user; A's first purchase predates B.
    assert first.item.tolist() == [a, first.items.index("B")]
    assert last.item.tolist() == [last.items.index("B"), a]
    [stats, _] = log_stats(logs)
    assert (stats.rows, stats.unique_pairs) == (3, 2)


def test_k_core_filters_per_market_and_reindexes_items(tmp_path: Path) -> None:
    # Users a, b, c each buy X and Y; d buys only Z: a 2-core drops d and Z.
    rows = ["user item"] + [f"{u} {i}" for u in "abc" for i in "XY"] + ["d Z"]
    write(tmp_path / "de.txt", "\n".join(rows) + "\n")
    data = load_interactions(tmp_path, k_core=2)
    assert data.items.ids == ("X", "Y")
    assert data.user_ids == ("a", "b", "c")
    assert len(data.user) == 6


def test_users_are_per_market(tmp_path: Path) -> None:
    write(tmp_path / "de.txt", "user item\nsame A\n")
    write(tmp_path / "fr.txt", "user item\nsame A\n")
    data = load_interactions(tmp_path)
    assert data.n_users == 2
    assert data.user_market.tolist() == [0, 1]
    assert data.markets == ("de", "fr")


def test_vocabulary_reserves_padding() -> None:
    vocab = Vocabulary.from_ids(["b", "a", "b"])
    assert vocab.ids == ("a", "b")
    assert vocab.index("a") == 1
    assert vocab.size == 3
    assert vocab.lookup(["b", "unknown"]).tolist() == [2, PAD]
    assert vocab.item(2) == "b"
    with pytest.raises(IndexError):
        vocab.item(PAD)


def test_vocabulary_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.from_ids(["x", "y"])
    vocab.save(tmp_path / "items.json")
    loaded = Vocabulary.load(tmp_path / "items.json")
    assert loaded == vocab
    assert loaded.sha256() == vocab.sha256()


def test_pad_rows_keeps_most_recent() -> None:
    out = pad_rows([[1, 2, 3], [4], []], max_len=2)
    assert out.tolist() == [[2, 3], [4, PAD], [PAD, PAD]]
    assert pad_rows([]).shape == (0, 1)


def test_recent_histories_keep_the_newest_items() -> None:
    histories = np.array([[1, 2, 3, 4, 5], [6, 7, PAD, PAD, PAD], [PAD] * 5])
    assert recent_histories(histories, 3).tolist() == [[3, 4, 5], [6, 7, PAD], [PAD] * 3]
    assert recent_histories(histories, 5) is histories


def test_find_sorted_marks_absent_queries() -> None:
    at, found = find_sorted(np.array([2, 5, 9]), np.array([5, 1, 9, 12]))
    assert found.tolist() == [True, False, True, False]
    assert at[found].tolist() == [1, 2]
    assert ((at >= 0) & (at < 3)).all()  # always a valid index, even past the end
