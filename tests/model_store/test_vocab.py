"""The vocabulary and row padding that training and the service share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.vocab import PAD, Vocabulary, find_sorted, pad_rows, recent_histories


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
